"""KITTI semantic segmentation (Alhaija et al. 2018): frames of another street camera, labelled with Cityscapes
label ids and scored in Cityscapes' 19 train ids."""

from __future__ import annotations

from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, pair_files, table_lut
from segrefine.data.meta import CITYSCAPES_LABEL_TO_TRAIN, KITTI, DatasetMeta
from segrefine.imageio import IMAGE_SUFFIXES

SPLITS = ("train",)
LAYOUT = (
    "<root>/training/image_2/<name>.png (or any image format) with labels <root>/training/semantic/<name>.png (the official download; "
    "Cityscapes label ids 0-33, mapped to the 19 train ids by the Cityscapes table, every other id ignored), or "
    "<root>/images/<name>.png with <root>/labelIds/<name>.png; KITTI labels only its training frames, so the one "
    "split is train"
)


def meta(root: Root = None) -> DatasetMeta:
    return KITTI


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "kitti", LAYOUT)
    official = base / "training"
    image_dir, label_dir = (
        (official / "image_2", official / "semantic") if official.is_dir() else (base / "images", base / "labelIds")
    )
    pairs = pair_files(
        FileSet(image_dir, IMAGE_SUFFIXES), FileSet(label_dir, (".png",)), dataset="kitti", split=split, layout=LAYOUT
    )
    return PairedFiles(pairs, KITTI, table_lut(CITYSCAPES_LABEL_TO_TRAIN), transform)
