"""Label statistics of a dataset split: class pixel frequencies and the class weights derived from them."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from segrefine.data.meta import IGNORE_INDEX

CLASS_WEIGHTS = ("none", "enet", "median")


def class_frequencies(dataset: Dataset, num_classes: int) -> np.ndarray:
    """Share of the labelled pixels of the split that belong to each class (ignore pixels left out)."""
    counts = np.zeros(num_classes, np.int64)
    for index in range(len(dataset)):
        label = dataset.load(index)[1] if hasattr(dataset, "load") else dataset[index]["label"].numpy()
        values = label[label != IGNORE_INDEX].astype(np.int64, copy=False)
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(int(counts.sum()), 1)


def class_weights(kind: str, frequencies: np.ndarray) -> torch.Tensor | None:
    """Per-class loss weights: ENet's 1 / ln(1.02 + p), or median frequency / p (SegNet); None for "none".
    Classes absent from the split get the largest weight of the others (they cannot pull the loss anyway)."""
    if kind == "none":
        return None
    present = frequencies > 0
    if kind == "enet":
        weights = 1.0 / np.log(1.02 + frequencies)
    elif kind == "median":
        weights = np.where(present, np.median(frequencies[present]) / np.maximum(frequencies, 1e-12), 0.0)
    else:
        raise ValueError(f"class weight must be one of {', '.join(CLASS_WEIGHTS)}, got {kind!r}")
    weights = np.where(present, weights, weights[present].max() if present.any() else 1.0)
    return torch.tensor(weights, dtype=torch.float32)
