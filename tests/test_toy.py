"""The procedural toy dataset: deterministic, all classes present, thin poles, fast."""

import numpy as np
import pytest
import torch

from segrefine.data import build_dataset, dataset_meta
from segrefine.data.toy import POLE, render

K = dataset_meta("toy").num_classes


def test_deterministic_per_seed_split_and_index():
    a = build_dataset("toy", None, "train", length=4)
    b = build_dataset("toy", None, "train", length=4)
    assert torch.equal(a[3]["image"], b[3]["image"]) and torch.equal(a[3]["label"], b[3]["label"])
    assert not torch.equal(a[3]["image"], a[2]["image"])
    val = build_dataset("toy", None, "val", length=4)
    assert not torch.equal(a[3]["label"], val[3]["label"])
    other_seed = build_dataset("toy", None, "train", length=4, seed=1)
    assert not torch.equal(a[3]["label"], other_seed[3]["label"])


def test_shapes_lengths_and_types():
    assert len(build_dataset("toy", None, "train")) == 2000 and len(build_dataset("toy", None, "val")) == 100
    item = build_dataset("toy", None, "val")[0]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 128, 256)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (128, 256)
    assert item["name"] == "toy_val_000000"
    big = build_dataset("toy", None, "test", size=(96, 160), length=2)
    assert big[1]["image"].shape == (3, 96, 160) and big[1]["label"].shape == (96, 160)
    with pytest.raises(IndexError):
        big[2]


def test_all_classes_appear_and_labels_are_classes():
    ds = build_dataset("toy", None, "train", length=8)
    seen = np.zeros(K, np.int64)
    for i in range(len(ds)):
        label = ds[i]["label"].numpy()
        assert label.min() >= 0 and label.max() < K
        seen += np.bincount(label.ravel(), minlength=K)
    assert (seen > 0).all(), dict(zip(dataset_meta("toy").classes, seen.tolist()))


def _runs(mask_row: np.ndarray) -> list[int]:
    padded = np.concatenate([[0], mask_row.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return (edges[1::2] - edges[::2]).tolist()


def test_poles_are_thin():
    widths = []
    for i in range(6):
        _, label = render(np.random.default_rng([0, 0, i]))
        rows = label == POLE
        assert rows.any()
        widths += [w for row in rows for w in _runs(row)]
    widths = np.asarray(widths)
    # most horizontal runs of pole pixels cross a vertical pole: 2-4 px wide at 128×256
    assert np.mean((widths >= 2) & (widths <= 4)) > 0.8, np.bincount(widths)


def test_each_class_has_its_own_colour():
    """A nearest-mean colour classifier already separates most pixels: appearance is learnable."""
    images, labels = zip(*(render(np.random.default_rng([1, 0, i])) for i in range(6)))
    pixels, classes = np.concatenate([im.reshape(-1, 3) for im in images]), np.concatenate([l.ravel() for l in labels])
    means = np.stack([pixels[classes == c].mean(0) for c in range(K)])
    nearest = np.argmin(((pixels[:, None, :].astype(np.float32) - means[None]) ** 2).sum(-1), 1)
    assert (nearest == classes).mean() > 0.9


def test_render_is_an_image_and_its_label_and_repeats_per_seed():
    image, label = render(np.random.default_rng(0), 96, 160)
    again, same = render(np.random.default_rng(0), 96, 160)
    assert image.dtype == np.uint8 and image.shape == (96, 160, 3) and label.shape == (96, 160)
    assert np.array_equal(image, again) and np.array_equal(label, same)
