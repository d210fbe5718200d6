"""COCO-Stuff 164k: stored ids (COCO category id - 1) mapped to 171 contiguous classes."""

from __future__ import annotations

from segrefine.data.base import (
    FileSet, PairedFiles, Root, Transform, find_root, first_complete, identity_lut, pair_files, table_lut,
)  # fmt: skip
from segrefine.data.meta import COCOSTUFF, COCOSTUFF_ID_TO_TRAIN, DatasetMeta

SPLITS = ("train", "val")
LAYOUT = (
    "<root>/images/{train2017,val2017}/<name>.jpg with labels <root>/annotations/<split>2017/<name>.png "
    "(the 164k release's stuffthingmaps: ids 0-181 mapped to 171 contiguous classes, unused ids and 255 "
    "ignored) or <name>_labelTrainIds.png (contiguous ids, used when every image of the split has one)"
)

TRAIN_IDS_SUFFIX = "_labelTrainIds.png"  # written by mmsegmentation's conversion script


def meta(root: Root = None) -> DatasetMeta:
    return COCOSTUFF


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "cocostuff", LAYOUT)
    images = FileSet(base / "images" / f"{split}2017", (".jpg",))
    label_dir = base / "annotations" / f"{split}2017"
    labels, lut = first_complete(
        images,
        (FileSet(label_dir, (TRAIN_IDS_SUFFIX,)), identity_lut(COCOSTUFF.num_classes)),
        (FileSet(label_dir, (".png",), exclude=(TRAIN_IDS_SUFFIX,)), table_lut(COCOSTUFF_ID_TO_TRAIN)),
    )
    pairs = pair_files(images, labels, dataset="cocostuff", split=split, layout=LAYOUT)
    return PairedFiles(pairs, COCOSTUFF, lut, transform)
