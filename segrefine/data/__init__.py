"""Datasets: one small adapter per dataset, registered by name in `DATASETS`.

An item is {"image": uint8 3×H×W RGB (float 3×h×w after a transform), "label": int64 H×W train ids with 255 =
ignore, "name": image file stem, "path": str}. Transforms for training and evaluation are in
`segrefine.data.transforms`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch.utils.data import Dataset

from segrefine.data import ade20k, bdd100k, camvid, cityscapes, cocostuff, folder, kitti, lip, toy
from segrefine.data.base import Root, Transform
from segrefine.data.meta import DatasetMeta
from segrefine.errors import SegrefineError

__all__ = ["DATASETS", "DatasetMeta", "DatasetSpec", "build_dataset", "dataset_layouts", "dataset_meta"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to build one dataset: `build(root, split, transform, **options)`, its metadata, layout and splits."""

    build: Callable[..., Dataset]
    meta: Callable[[Root], DatasetMeta]
    layout: str
    splits: tuple[str, ...]

    @property
    def options(self) -> dict[str, object]:
        """Keyword options of `build` beyond root/split/transform, with their defaults."""
        params = inspect.signature(self.build).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


DATASETS: dict[str, DatasetSpec] = {
    module.__name__.rpartition(".")[2]: DatasetSpec(module.build, module.meta, module.LAYOUT, module.SPLITS)
    for module in (cityscapes, bdd100k, ade20k, lip, cocostuff, camvid, kitti, folder, toy)
}


def _spec(name: str) -> DatasetSpec:
    spec = DATASETS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name).lower(), DATASETS, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SegrefineError(f"unknown dataset {name!r}; {hint}known datasets: {', '.join(DATASETS)}")
    return spec


def dataset_meta(name: str, root: Root = None) -> DatasetMeta:
    """Classes, palette, ignore index and flip pairs of a dataset (`folder` reads them from root/classes.txt)."""
    return _spec(name).meta(root)


def build_dataset(
    name: str,
    root: Root,
    split: str,
    transform: Transform | None = None,
    **options: object,
) -> Dataset:
    """The `split` of dataset `name` under `root`; `transform` maps the sample dict (torchvision v2 style)."""
    spec = _spec(name)
    if split not in spec.splits:
        raise SegrefineError(f"dataset {name} has no split {split!r}; choose from {', '.join(spec.splits)}")
    unknown = sorted(options.keys() - spec.options.keys())
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise SegrefineError(f"dataset {name} has no option {', '.join(unknown)} (its options: {allowed})")
    return spec.build(root, split, transform, **options)


def dataset_layouts() -> dict[str, str]:
    """Dataset name -> one paragraph describing the files it expects under the data root."""
    return {name: spec.layout for name, spec in DATASETS.items()}
