"""Your own data: images/ and masks/ with equal stems, and a classes.txt naming the classes."""

from __future__ import annotations

import re
from pathlib import Path

from segrefine.imageio import IMAGE_SUFFIXES
from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, identity_lut, pair_files
from segrefine.data.meta import IGNORE_INDEX, Color, DatasetMeta, voc_palette
from segrefine.errors import SegrefineError

SPLITS = ("train", "val", "test")
LAYOUT = (
    "<root>/images/<name>.{jpg,png,...} with masks <root>/masks/<name>.png (class ids 0..K-1 as stored, "
    "255 ignore) and <root>/classes.txt (one class name per line in id order, optionally followed by its "
    "colour r,g,b); with <root>/images/<split>/ and <root>/masks/<split>/ each split has its own files, "
    "otherwise every split reads the same images/ and masks/"
)

MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")
_LINE = re.compile(r"^(?P<name>.*?)[\s,;:]*(?<![\w.])(?P<rgb>\d+\s*,\s*\d+\s*,\s*\d+)$")


def read_classes(path: Path) -> DatasetMeta:
    """Parse classes.txt: `name` or `name r,g,b` per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SegrefineError(f"cannot read {path}: {e}") from None
    names: list[str] = []
    colors: list[Color | None] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        name, color = (match["name"].strip(), tuple(int(v) for v in match["rgb"].split(","))) if match else (line, None)
        if not name:
            raise SegrefineError(f"{path} line {number}: a colour but no class name")
        if color is not None and max(color) > 255:
            raise SegrefineError(f"{path} line {number}: colour {match['rgb']} has a value above 255")
        if name in names:
            raise SegrefineError(f"{path} line {number}: class {name!r} is listed twice")
        names.append(name)
        colors.append(color)
    if not names:
        raise SegrefineError(f"{path} lists no classes; write one class name per line")
    if len(names) >= IGNORE_INDEX:
        raise SegrefineError(f"{path} lists {len(names)} classes; at most {IGNORE_INDEX - 1} fit (255 is ignore)")
    default = voc_palette(len(names))
    palette = tuple(c if c is not None else d for c, d in zip(colors, default))
    return DatasetMeta("folder", tuple(names), palette)


def meta(root: Root = None) -> DatasetMeta:
    base = find_root(root, "folder", LAYOUT)
    path = base / "classes.txt"
    if not path.is_file():
        raise SegrefineError(f"{path} does not exist; expected layout: {LAYOUT}")
    return read_classes(path)


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    info = meta(root)
    base = Path(root).expanduser()
    sub = split if (base / "images" / split).is_dir() else ""
    images = FileSet(base / "images" / sub, IMAGE_SUFFIXES)
    labels = FileSet(base / "masks" / sub, MASK_SUFFIXES)
    pairs = pair_files(images, labels, dataset="folder", split=split, layout=LAYOUT)
    return PairedFiles(pairs, info, identity_lut(info.num_classes), transform)
