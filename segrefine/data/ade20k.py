"""ADE20K scene parsing (ADEChallengeData2016): 150 classes stored as 1..150 with 0 unlabelled."""

from __future__ import annotations

from segrefine.data.base import FileSet, PairedFiles, Root, Transform, find_root, pair_files, reduce_zero_lut
from segrefine.data.meta import ADE20K, DatasetMeta

SPLITS = ("train", "val")
LAYOUT = (
    "<root>/ADEChallengeData2016/images/{training,validation}/<name>.jpg with labels "
    "<root>/ADEChallengeData2016/annotations/<split>/<name>.png (0 unlabelled -> 255, v -> v-1); "
    "<root> may also be ADEChallengeData2016 itself; split train reads training/, val reads validation/"
)

FOLDERS = {"train": "training", "val": "validation"}


def meta(root: Root = None) -> DatasetMeta:
    return ADE20K


def build(root: Root, split: str, transform: Transform | None = None) -> PairedFiles:
    base = find_root(root, "ade20k", LAYOUT, inner="ADEChallengeData2016")
    images = FileSet(base / "images" / FOLDERS[split], (".jpg",))
    labels = FileSet(base / "annotations" / FOLDERS[split], (".png",))
    pairs = pair_files(images, labels, dataset="ade20k", split=split, layout=LAYOUT)
    return PairedFiles(pairs, ADE20K, reduce_zero_lut(ADE20K.num_classes), transform)
