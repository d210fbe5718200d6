"""CamVid road scenes, the 11-class SegNet release (360×480): labels 0-10 as stored, 11 (void) ignored."""

from __future__ import annotations

from pathlib import Path

from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, identity_lut, listing, pair_files
from segrefine.data.meta import CAMVID, IGNORE_INDEX, DatasetMeta
from segrefine.errors import SegrefineError
from segrefine.imageio import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test", "trainval")
LAYOUT = (
    "<root>/{train,val,test}/<name>.png (or any image format) with labels <root>/{train,val,test}annot/<name>.png (class ids 0-10 as "
    "stored, 11 = void is ignored); an optional <root>/<split>.txt lists the split's frames (image path first on "
    "each line); trainval is train and val together"
)

VOID_ID = 11


def meta(root: Root = None) -> DatasetMeta:
    return CAMVID


def listed_names(path: Path) -> list[str] | None:
    """Frame names (file names without folders) of a split list, or None when the split has no list."""
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SegrefineError(f"cannot read camvid split list {path}: {e}") from None
    return [line.split()[0].replace("\\", "/").rsplit("/", 1)[-1] for line in lines if line.strip()]


def split_pairs(base: Path, split: str) -> list[tuple[Path, Path]]:
    images = FileSet(base / split, IMAGE_SUFFIXES)
    labels = FileSet(base / f"{split}annot", (".png",))
    pairs = pair_files(images, labels, dataset="camvid", split=split, layout=LAYOUT)
    names = listed_names(base / f"{split}.txt")
    if names is None:
        return pairs
    # Listed by file name; matched by stem, so that frames re-encoded as JPEG still match the official lists.
    by_stem = {image.stem: (image, label) for image, label in pairs}
    stems = [n.rsplit(".", 1)[0] for n in names]
    missing = [n for n, stem in zip(names, stems) if stem not in by_stem]
    if missing:
        raise SegrefineError(
            f"camvid split {split}: {base / f'{split}.txt'} lists frames that {base / split} does not hold: "
            f"{listing(missing)}"
        )
    return [by_stem[stem] for stem in dict.fromkeys(stems)]


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "camvid", LAYOUT, inner="CamVid")
    parts = ("train", "val") if split == "trainval" else (split,)
    pairs = [pair for part in parts for pair in split_pairs(base, part)]
    lut = identity_lut(CAMVID.num_classes)
    lut[VOID_ID] = IGNORE_INDEX
    return PairedFiles(pairs, CAMVID, lut, transform)
