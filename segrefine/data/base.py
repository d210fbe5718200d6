"""What every file-based dataset shares: finding and pairing files, decoding them, mapping label ids."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from segrefine.data.meta import IGNORE_INDEX, DatasetMeta
from segrefine.errors import SegrefineError
from segrefine.imageio import read_image, read_label_map

Transform = Callable[[dict[str, Any]], dict[str, Any]]
Root = str | os.PathLike | None  # a dataset's data root as the user gave it

# Decoding and drawing run inside DataLoader workers, which already use every core; opencv's own thread pool
# would only oversubscribe them (and can hang workers forked after it started).
cv2.setNumThreads(0)

INVALID = -1  # marks stored label values that are neither a class nor ignore in a lookup table


def identity_lut(num_classes: int) -> np.ndarray:
    """Labels stored as train ids: 0..K-1 and 255 are kept, anything else is invalid."""
    lut = np.full(256, INVALID, np.int16)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def reduce_zero_lut(num_classes: int) -> np.ndarray:
    """Labels stored as 1..K with 0 = unlabelled: 0 becomes ignore, v becomes v-1."""
    lut = np.full(256, INVALID, np.int16)
    lut[1 : num_classes + 1] = np.arange(num_classes)
    lut[0] = lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def table_lut(table: Mapping[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    """Labels stored as ids that a table maps to train ids; ids outside the table become `default`."""
    lut = np.full(256, default, np.int16)
    for stored, train in table.items():
        if 0 <= stored < 256:
            lut[stored] = train
    return lut


def map_label(label: np.ndarray, lut: np.ndarray, path: Path, meta: DatasetMeta) -> np.ndarray:
    """Apply a lookup table to a stored label map; stored values that are no class and not ignore are an error."""
    if label.dtype == np.uint8:  # every value indexes the table: no clipping, no wide values to find
        mapped = lut[label]
        invalid = mapped == INVALID
    else:
        mapped = lut[np.minimum(label, 255)]
        invalid = (mapped == INVALID) | (label > 255)
    if invalid.any():
        values = np.unique(label[invalid])
        shown = ", ".join(str(v) for v in values[:10]) + (f", ... ({len(values)} values)" if len(values) > 10 else "")
        raise SegrefineError(
            f"label file {path} has values {shown} that are neither a class of {meta.name} "
            f"({meta.num_classes} classes) nor {IGNORE_INDEX} (ignore)"
        )
    return mapped


def make_sample(
    image: np.ndarray, label: np.ndarray, name: str, path: str, transform: Transform | None
) -> dict[str, Any]:
    """{"image": uint8 3×H×W (or what the transform makes), "label": int64 H×W, "name", "path"} as plain tensors."""
    sample: dict[str, Any] = {
        "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)),
        "label": tv_tensors.Mask(torch.from_numpy(label.astype(np.int64, copy=False))),
        "name": name,
        "path": path,
    }
    if transform is not None:
        sample = transform(sample)
    sample["image"] = sample["image"].as_subclass(torch.Tensor).contiguous()
    sample["label"] = sample["label"].as_subclass(torch.Tensor).long()
    return sample


@dataclass(eq=False, repr=False)  # datasets compare and print as objects, not as their file lists
class PairedFiles(Dataset):
    """Image/label file pairs; the label's stored values are mapped to train ids by a lookup table."""

    pairs: list[tuple[Path, Path]]
    meta: DatasetMeta
    lut: np.ndarray
    transform: Transform | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded RGB image (H×W×3 uint8) and its train-id label map (H×W int16)."""
        image_path, label_path = self.pairs[index]
        image = read_image(image_path)
        label = read_label_map(label_path)
        if image.shape[:2] != label.shape:
            raise SegrefineError(
                f"image {image_path} is {image.shape[0]}×{image.shape[1]} but its label {label_path} is "
                f"{label.shape[0]}×{label.shape[1]} (H×W)"
            )
        return image, map_label(label, self.lut, label_path, self.meta)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.load(index)
        image_path = self.pairs[index][0]
        return make_sample(image, label, image_path.stem, os.fspath(image_path), self.transform)


def find_root(root: Root, dataset: str, layout: str, inner: str | None = None) -> Path:
    """The dataset root as a Path; descends into `inner` when the user gave the folder above it."""
    if root is None:
        raise SegrefineError(f"dataset {dataset} needs a data root; expected layout: {layout}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise SegrefineError(f"{dataset} data root {path} does not exist or is not a folder; expected layout: {layout}")
    if inner is not None and (path / inner).is_dir():
        path = path / inner
    return path


@dataclass(frozen=True)
class FileSet:
    """Files `depth` levels below `folder` whose names end with one of `suffixes` (any case), minus `exclude`."""

    folder: Path
    suffixes: tuple[str, ...]
    depth: int = 1
    exclude: tuple[str, ...] = ()

    def pattern(self) -> str:
        ends = self.suffixes[0] if len(self.suffixes) == 1 else "{" + ",".join(self.suffixes) + "}"
        return (self.folder / "/".join(["*"] * self.depth)).as_posix() + ends.lstrip("*")

    def index(self) -> dict[str, Path]:
        """The files keyed by their path relative to `folder` without the suffix (the pairing key)."""
        suffixes = tuple(s.lower() for s in self.suffixes)
        exclude = tuple(s.lower() for s in self.exclude)
        found: dict[str, Path] = {}
        for path in sorted(self.folder.glob("/".join(["*"] * self.depth))):
            lower = path.name.lower()
            suffix = next((s for s in suffixes if lower.endswith(s)), None)
            if suffix is None or lower.endswith(exclude) or not path.is_file():
                continue
            key = path.relative_to(self.folder).as_posix()[: -len(suffix)]
            if key in found:
                raise SegrefineError(f"{found[key]} and {path} have the same name; keep only one of them")
            found[key] = path
        return found


def first_complete(
    images: FileSet, preferred: tuple[FileSet, np.ndarray], fallback: tuple[FileSet, np.ndarray]
) -> tuple[FileSet, np.ndarray]:
    """The `preferred` (labels, lookup table) when it has a label for every image, else `fallback`."""
    keys = images.index().keys()
    return preferred if keys and preferred[0].index().keys() >= keys else fallback


def listing(names: list[str], shown: int = 3) -> str:
    """The first `shown` names and how many there are: `a, b, c, ... (7 in all)`."""
    return f"{', '.join(names[:shown])}{', ...' if len(names) > shown else ''} ({len(names)} in all)"


def pair_files(images: FileSet, labels: FileSet, *, dataset: str, split: str, layout: str) -> list[tuple[Path, Path]]:
    """(image, label) pairs with equal keys; a missing or empty split or a file without its partner is an error."""
    for files in (images, labels):
        if not files.folder.is_dir():
            raise SegrefineError(
                f"{dataset} split {split}: folder {files.folder} does not exist; expected layout: {layout}"
            )
    image_files, label_files = images.index(), labels.index()
    if not image_files:
        raise SegrefineError(f"{dataset} split {split}: no images matching {images.pattern()}")
    lonely = [image_files[k].name for k in sorted(image_files.keys() - label_files.keys())]
    if lonely:
        raise SegrefineError(f"{dataset} split {split}: images without a label {labels.pattern()}: {listing(lonely)}")
    lonely = [label_files[k].name for k in sorted(label_files.keys() - image_files.keys())]
    if lonely:
        raise SegrefineError(f"{dataset} split {split}: labels without an image {images.pattern()}: {listing(lonely)}")
    return [(image_files[k], label_files[k]) for k in sorted(image_files)]
