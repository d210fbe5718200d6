"""LIP (Look Into Person) human parsing: 20 classes stored as they are, 0 = background."""

from __future__ import annotations

from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, identity_lut, pair_files
from segrefine.data.meta import LIP, DatasetMeta

SPLITS = ("train", "val")
LAYOUT = (
    "<root>/{train,val}_images/<name>.jpg with labels <root>/<split>_segmentations/<name>.png "
    "(class ids 0-19 as stored; a horizontal flip swaps left/right arm, leg and shoe)"
)


def meta(root: Root = None) -> DatasetMeta:
    return LIP


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "lip", LAYOUT)
    images = FileSet(base / f"{split}_images", (".jpg",))
    labels = FileSet(base / f"{split}_segmentations", (".png",))
    pairs = pair_files(images, labels, dataset="lip", split=split, layout=LAYOUT)
    return PairedFiles(pairs, LIP, identity_lut(LIP.num_classes), transform)
