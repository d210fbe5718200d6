"""BDD100K semantic segmentation (10k images): labels are stored as Cityscapes train ids."""

from __future__ import annotations

from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, identity_lut, pair_files
from segrefine.data.meta import BDD100K, DatasetMeta

SPLITS = ("train", "val")
LAYOUT = (
    "<root>/images/10k/{train,val}/<name>.jpg with labels <root>/labels/sem_seg/masks/<split>/<name>.png "
    "(Cityscapes train ids 0-18, 255 ignore); <root> may also be the folder holding bdd100k/"
)


def meta(root: Root = None) -> DatasetMeta:
    return BDD100K


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "bdd100k", LAYOUT, inner="bdd100k")
    images = FileSet(base / "images" / "10k" / split, (".jpg",))
    labels = FileSet(base / "labels" / "sem_seg" / "masks" / split, (".png",))
    pairs = pair_files(images, labels, dataset="bdd100k", split=split, layout=LAYOUT)
    return PairedFiles(pairs, BDD100K, identity_lut(BDD100K.num_classes), transform)
