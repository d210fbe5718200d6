"""Test-time inference modes: whole image or sliding window, multi-scale, horizontal flip.

Within one pass (one scale, one flip state) the logits of overlapping sliding windows are averaged. Across passes
the softmax probabilities are averaged (the mmsegmentation test-time-augmentation convention), and
`predict_logits` always returns the log of the averaged probabilities: valid logits (their softmax is the averaged
probability, their argmax the prediction) whatever the number of passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.errors import SegrefineError, SettingError

__all__ = ["MODES", "check_scales", "predict_logits"]

MODES = ("whole", "slide")
Size = tuple[int, int]


def check_scales(scales: Sequence[float]) -> None:
    """Every scale must be a positive, finite number."""
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise SettingError(f"`scales` must be one or more positive numbers, got {tuple(scales)}")


def _forward(model: nn.Module, images: Tensor, num_classes: int) -> Tensor:
    """Logits of one forward pass at the input resolution."""
    logits = model(images)
    if isinstance(logits, Mapping):  # a model left in train mode
        logits = logits["out"]
    if logits.dim() != 4 or logits.shape[1] != num_classes:
        raise SegrefineError(
            f"the model returns {tuple(logits.shape)} but {num_classes} classes were expected "
            "(checkpoint and dataset classes disagree?)"
        )
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return logits


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets every `stride`, the last one flush with the end so that the windows cover `length`."""
    return [*range(0, length - crop, stride), length - crop]


def _slide(model: nn.Module, images: Tensor, crop: Size, stride: Size, num_classes: int) -> Tensor:
    """Logits from windows of `crop` every `stride`, averaged where they overlap."""
    batch, _, height, width = images.shape
    # A crop larger than the image shrinks to it, so no window sees padding.
    crop_h, crop_w = min(crop[0], height), min(crop[1], width)
    stride_h, stride_w = min(stride[0], crop_h), min(stride[1], crop_w)
    logits = images.new_zeros(batch, num_classes, height, width)
    count = images.new_zeros(1, 1, height, width)
    for top in _window_starts(height, crop_h, stride_h):
        for left in _window_starts(width, crop_w, stride_w):
            window = images[..., top : top + crop_h, left : left + crop_w]
            logits[..., top : top + crop_h, left : left + crop_w] += _forward(model, window, num_classes)
            count[..., top : top + crop_h, left : left + crop_w] += 1
    return logits / count


def _check_options(
    mode: str, crop: Size | None, stride: Size | None, scales: Sequence[float], flip_pairs: Sequence[Sequence[int]],
    num_classes: int,
) -> None:
    if mode not in MODES:
        raise SettingError(f"`mode` must be one of {', '.join(MODES)}, got {mode!r}")
    check_scales(scales)
    if mode == "slide":
        if crop is None:
            raise SettingError("`crop` is required with `mode` slide")
        if min(crop) < 1:
            raise SettingError(f"`crop` must be positive, got {crop[0]}x{crop[1]}")
        if stride is not None and (min(stride) < 1 or stride[0] > crop[0] or stride[1] > crop[1]):
            raise SettingError(
                f"`stride` must be positive and at most the crop {crop[0]}x{crop[1]}, got {stride[0]}x{stride[1]}"
            )
    for pair in flip_pairs:
        if len(pair) != 2 or not all(0 <= c < num_classes for c in pair):
            raise SegrefineError(f"flip pair {tuple(pair)} is not two class ids in 0..{num_classes - 1}")


def _flip_permutation(flip_pairs: Sequence[Sequence[int]], num_classes: int) -> list[int]:
    """Channel order that swaps every (left, right) pair."""
    order = list(range(num_classes))
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    return order


def class_labels(logits: Tensor) -> Tensor:
    """B×H×W: the argmax over the K classes of B×K×H×W logits."""
    # On a CPU the reduction runs over contiguous memory in channels-last (each pixel's K scores side by side) and
    # several times faster than across NCHW planes, the copy included (K=11 at 512×1024: 12 vs 80 ms).
    if logits.device.type == "cpu":
        logits = logits.contiguous(memory_format=torch.channels_last)
    return logits.argmax(1)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: Tensor,
    *,
    num_classes: int,
    mode: str = "whole",
    crop: Size | None = None,
    stride: Size | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    flip_pairs: Sequence[Sequence[int]] = (),
    out_size: Size | None = None,
) -> Tensor:
    """B×K×H×W logits (log of averaged probabilities) for normalised B×3×H×W `images`.

    `model` must be in eval mode and return B×K×h×w logits for a B×3×h×w input. `mode="slide"` runs windows of
    `crop` (height, width) every `stride` (default: two thirds of the crop). Each of `scales` resizes the image
    bilinearly before inference; with `flip` every scale also runs on the mirrored image, whose logits are
    mirrored back with the channels of each of `flip_pairs` swapped. The result is resized to `out_size`
    (default: the input size).
    """
    if images.dim() != 4:
        raise ValueError(f"expected B×3×H×W images, got {tuple(images.shape)}")
    _check_options(mode, crop, stride, scales, flip_pairs, num_classes)
    height, width = images.shape[-2:]
    out_size = tuple(out_size) if out_size is not None else (height, width)
    if mode == "slide" and stride is None:
        stride = (max(1, 2 * crop[0] // 3), max(1, 2 * crop[1] // 3))
    order = _flip_permutation(flip_pairs, num_classes)

    def run(x: Tensor) -> Tensor:
        if mode == "slide":
            return _slide(model, x, crop, stride, num_classes)
        return _forward(model, x, num_classes)

    probs = None
    passes = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False
        )
        for flipped in (False, True) if flip else (False,):
            if flipped:
                logits = run(scaled.flip(-1)).flip(-1)[:, order]
            else:
                logits = run(scaled)
            if logits.shape[-2:] != out_size:
                logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            p = logits.float().softmax(1)
            probs = p if probs is None else probs.add_(p)
            passes += 1
    # Clamp so that a probability that underflowed to 0 gives a large negative logit, not -inf.
    return probs.div_(passes).clamp_min_(torch.finfo(probs.dtype).tiny).log_()
