"""Cityscapes fine annotations: raw label ids mapped by the official table, or ready-made train ids."""

from __future__ import annotations

import numpy as np

from segrefine.data.base import (
    FileSet, PairedFiles, Root, Transform, find_root, first_complete, identity_lut, pair_files, table_lut,
)  # fmt: skip
from segrefine.data.meta import CITYSCAPES, CITYSCAPES_LABEL_TO_TRAIN, IGNORE_INDEX, DatasetMeta

SPLITS = ("train", "val", "test")
LAYOUT = (
    "<root>/leftImg8bit/{train,val,test}/<city>/<frame>_leftImg8bit.png with labels "
    "<root>/gtFine/<split>/<city>/<frame>_gtFine_labelIds.png (raw ids 0-33, mapped to the 19 train ids by the "
    "official table, every other id ignored) or <frame>_gtFine_labelTrainIds.png (used when every frame of the "
    "split has one)"
)


# Train id -> official label id; anything that is no train id becomes 0, "unlabeled" (not evaluated).
_LABEL_IDS = table_lut({t: i for i, t in CITYSCAPES_LABEL_TO_TRAIN.items() if t != IGNORE_INDEX}, 0).astype(np.uint8)


def label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Train ids (uint8 H×W) -> the official label ids that cityscapesscripts and the benchmark server evaluate."""
    return _LABEL_IDS[train_ids]


def meta(root: Root = None) -> DatasetMeta:
    return CITYSCAPES


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "cityscapes", LAYOUT)
    images = FileSet(base / "leftImg8bit" / split, ("_leftImg8bit.png",), depth=2)
    label_dir = base / "gtFine" / split
    labels, lut = first_complete(
        images,
        (FileSet(label_dir, ("_gtFine_labelTrainIds.png",), depth=2), identity_lut(CITYSCAPES.num_classes)),
        (FileSet(label_dir, ("_gtFine_labelIds.png",), depth=2), table_lut(CITYSCAPES_LABEL_TO_TRAIN)),
    )
    pairs = pair_files(images, labels, dataset="cityscapes", split=split, layout=LAYOUT)
    return PairedFiles(pairs, CITYSCAPES, lut, transform)
