"""Test-time inference modes: whole image or sliding window, multi-scale, horizontal flip.

Within one pass (one scale, one flip state) the logits of overlapping sliding windows are averaged. Across passes
the softmax probabilities are averaged (the mmsegmentation test-time-augmentation convention), then the guided filter
snaps the class boundaries to the image's edges (`segrefine.engine.guided`). `predict_probs` returns these
probabilities (each pixel's sum to one; the filter's linear fit may overshoot [0, 1] slightly); `predict_logits`
their log, clamped from below: valid logits (their argmax the prediction) whatever the number of passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.data import dataset_meta
from segrefine.engine.config import MAX_CROP
from segrefine.engine.guided import guided_probs
from segrefine.errors import SegrefineError, SettingError, check_fields
from segrefine.hub.onnx import OnnxModel

__all__ = ["BACKENDS", "MODES", "PRECISIONS", "InferenceOptions", "at_model_scale", "check_runtime", "check_scales", "inference_options", "predict_logits", "predict_probs"]

MODES = ("whole", "slide")
BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16")
MAX_ENLARGED_SIDE = 4  # × short_side: the longest side an image is enlarged to
Size = tuple[int, int]


def check_scales(scales: Sequence[float]) -> None:
    """Every scale must be a positive, finite number."""
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise SettingError(f"`scales` must be one or more positive numbers, got {tuple(scales)}")


@dataclass(frozen=True)
class InferenceOptions:
    """How a model runs at test time; every combination is checked here, once. eval and predict make their flags
    from these fields."""

    mode: str = field(default="whole", metadata={"help": "Whole image or sliding window.", "choices": MODES})
    crop: tuple[int, int] | None = field(default=None, metadata={"help": "Sliding-window size HxW (slide mode only)."})
    stride: tuple[int, int] | None = field(default=None, metadata={"help": "Sliding-window stride HxW (default: 2/3 of the crop)."})
    scales: tuple[float, ...] = field(default=(1.0,), metadata={"help": "Comma-separated test scales, e.g. 0.75,1.0,1.25."})
    flip: bool = field(default=False, metadata={"help": "Also run on the mirrored image (left/right classes swapped)."})
    batch_size: int | None = field(default=None, metadata={"help": "Same-size images per forward pass (default: 1; 4 for predict on CUDA)."})
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 autocast (torch backend, on CPUs and GPUs that have bf16).", "choices": PRECISIONS})
    backend: str | None = field(default=None, metadata={"help": "torch, or onnxruntime (default: onnxruntime for an .onnx file, else torch; a checkpoint is exported first).", "choices": BACKENDS})
    compile: bool = field(default=False, metadata={"help": "torch.compile the prediction step once per image size (CUDA graphs on CUDA)."})
    short_side: int | None = field(default=None, metadata={"help": f"Resize each image so that its shorter side has this many pixels before inference; labels come back at full size; an image is enlarged at most to a longer side of {MAX_ENLARGED_SIDE}× this (default: the side of the model's training images, 360 for CamVid; 0: each image at its own size)."})
    guided_filter: bool = field(default=True, metadata={"help": "Snap class boundaries to the image's edges (a guided filter of the class probabilities at full size), so that thin objects are not drawn a label-grid cell too wide."})

    def __post_init__(self) -> None:
        # Sequences from callers (lists, numpy) become tuples of Python numbers, so that options compare and hash by
        # value; then every field must have its annotated type.
        for name in ("crop", "stride", "scales"):
            value = getattr(self, name)
            if isinstance(value, Iterable) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(v.item() if isinstance(v, np.generic) else v for v in value))
        check_fields(self)
        object.__setattr__(self, "scales", tuple(map(float, self.scales)))
        if self.mode not in MODES:
            raise SettingError(f"`mode` must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_scales(self.scales)
        if self.mode != "slide" and (self.crop is not None or self.stride is not None):
            raise SettingError("`crop` and `stride` apply only with `mode` slide")
        crop, stride = self.crop, self.stride
        if self.mode == "slide":
            if crop is None:
                raise SettingError("`crop` is required: `mode` slide needs `crop`, the window's height and width")
            if min(crop) < 1:
                raise SettingError(f"`crop` must be positive, got {crop[0]}x{crop[1]}")
            if stride is not None and (min(stride) < 1 or stride[0] > crop[0] or stride[1] > crop[1]):
                raise SettingError(
                    f"`stride` must be positive and at most the crop {crop[0]}x{crop[1]}, got {stride[0]}x{stride[1]}"
                )
        if self.short_side is not None and not 0 <= self.short_side <= MAX_CROP:  # the largest side a crop may have
            raise SettingError(
                f"`short_side` must be 0 (each image at its own size) or a number of pixels up to {MAX_CROP}, got "
                f"{self.short_side}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise SettingError(f"`batch_size` must be at least 1, got {self.batch_size}")
        check_runtime(self.backend, self.precision)

    @property
    def single_pass(self) -> bool:
        """One forward pass of the whole image: its largest logit is the prediction."""
        return self.mode == "whole" and self.scales == (1.0,) and not self.flip and not self.guided_filter

    def input_size(self, height: int, width: int) -> Size:
        """The size an H×W image runs at (before `scales`): its shorter side brought to `short_side`, but an image is
        enlarged at most until its longer side is MAX_ENLARGED_SIDE × `short_side` (a 2×200 strip would otherwise run
        at 360×36000)."""
        if not self.short_side or min(height, width) == self.short_side:
            return height, width
        factor = self.short_side / min(height, width)
        if factor > 1:
            factor = max(1.0, min(factor, MAX_ENLARGED_SIDE * self.short_side / max(height, width)))
        return max(1, round(height * factor)), max(1, round(width * factor))


def at_model_scale(options: InferenceOptions, config: Mapping[str, Any], model: Any = None) -> InferenceOptions:
    """`options` with `short_side`, when not given, set to that of the images the model (its checkpoint `config`)
    learnt from: the side of its dataset's images where they have one size, else 0 (each image at its own size). An
    ONNX `model` exported for one input size keeps its inputs as they come (0): that size was chosen at export."""
    if options.short_side is not None:
        return options
    if isinstance(model, OnnxModel) and model.size is not None:
        return replace(options, short_side=0)
    try:
        side = dataset_meta(str(config.get("dataset") or "")).short_side
    except SegrefineError:  # trained on a dataset segrefine does not know, or a folder of its own
        side = None
    return replace(options, short_side=side or 0)


def inference_options(options: InferenceOptions | None, settings: Mapping[str, Any]) -> InferenceOptions:
    """`options`, or the InferenceOptions made of `settings` (its fields as keywords); not both."""
    if options is None:
        return InferenceOptions(**settings)
    if settings:
        raise SettingError(f"give `options` or its fields as keywords, not both (got {', '.join(settings)})")
    return options


def check_runtime(backend: str | None, precision: str) -> None:
    """`backend` (None: chosen by the weights) and `precision` must be among the known ones."""
    if backend is not None and backend not in BACKENDS:
        raise SettingError(f"`backend` must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise SettingError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision!r}")


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


def _slide(model: nn.Module, images: Tensor, crop: Size, stride: Size | None, num_classes: int) -> Tensor:
    """Logits from windows of `crop` every `stride` (default: two thirds of the crop), averaged where they overlap."""
    batch, _, height, width = images.shape
    if stride is None:
        stride = (max(1, 2 * crop[0] // 3), max(1, 2 * crop[1] // 3))
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


def _flip_permutation(flip_pairs: Sequence[Sequence[int]], num_classes: int) -> list[int]:
    """Channel order that swaps every (left, right) pair."""
    order = list(range(num_classes))
    for pair in flip_pairs:
        if len(pair) != 2 or not all(0 <= c < num_classes for c in pair):
            raise SegrefineError(f"flip pair {tuple(pair)} is not two class ids in 0..{num_classes - 1}")
        a, b = pair
        order[a], order[b] = b, a
    return order


def resized(images: Tensor, size: Size) -> Tensor:
    """Images brought to `short_side`: resized bilinearly to `size`, antialiased where they shrink."""
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def class_labels(logits: Tensor) -> Tensor:
    """B×H×W: the argmax over the K classes of B×K×H×W logits."""
    # On a CPU the reduction runs over contiguous memory in channels-last (each pixel's K scores side by side) and
    # several times faster than across NCHW planes, the copy included (K=11 at 512×1024: 12 vs 80 ms).
    if logits.device.type == "cpu":
        logits = logits.contiguous(memory_format=torch.channels_last)
    return logits.argmax(1)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, options: InferenceOptions | None = None, **kwargs: Any) -> Tensor:
    """B×K×H×W logits, the log of `predict_probs` (the same arguments): valid logits whatever the number of passes."""
    probs = predict_probs(model, images, options, **kwargs)
    # Clamp so that a probability that underflowed to 0 (or that the guided filter overshot below it) gives a large
    # negative logit, not -inf or NaN.
    return probs.clamp_min_(torch.finfo(probs.dtype).tiny).log_()


@torch.no_grad()  # not inference_mode: entered again inside Predictor's compiled step, inductor fails on it
def predict_probs(
    model: nn.Module,
    images: Tensor,
    options: InferenceOptions | None = None,
    *,
    num_classes: int,
    flip_pairs: Sequence[Sequence[int]] = (),
    out_size: Size | None = None,
    **settings: Any,
) -> Tensor:
    """B×K×H×W class probabilities for normalised B×3×H×W `images`, averaged over the inference passes.

    `model` must be in eval mode and return B×K×h×w logits for a B×3×h×w input. `options` (or its fields as
    keywords: `mode`, `crop`, `stride`, `scales`, `flip`, `short_side`, `guided_filter`) say how: `mode="slide"` runs
    windows of `crop` (height, width) every `stride` (default: two thirds of the crop). Each of `scales` resizes the
    image bilinearly before inference, after `short_side` brought the image's shorter side to it (antialiased when
    shrinking); with `flip` every scale also runs on the mirrored image, whose logits are mirrored back with the
    channels of each of `flip_pairs` swapped. The result is resized to `out_size` (default: the input size), where
    `guided_filter` refines the averaged probabilities along the edges of `images` (`segrefine.engine.guided`).
    """
    if images.dim() != 4:
        raise ValueError(f"expected B×3×H×W images, got {tuple(images.shape)}")
    options = inference_options(options, settings)
    order = _flip_permutation(flip_pairs, num_classes)
    height, width = images.shape[-2:]
    out_size = tuple(out_size) if out_size is not None else (height, width)

    def run(x: Tensor) -> Tensor:
        if options.mode == "slide":
            return _slide(model, x, options.crop, options.stride, num_classes)
        return _forward(model, x, num_classes)

    base = options.input_size(height, width)
    inputs = images if base == (height, width) else resized(images, base)
    flips = (False, True) if options.flip else (False,)
    probs = None
    for scale in options.scales:
        size = (max(1, round(base[0] * scale)), max(1, round(base[1] * scale)))
        scaled = inputs if size == base else F.interpolate(inputs, size=size, mode="bilinear", align_corners=False)
        for flipped in flips:
            logits = run(scaled.flip(-1)).flip(-1)[:, order] if flipped else run(scaled)
            if logits.shape[-2:] != out_size:
                logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
            p = logits.float().softmax(1)
            probs = p if probs is None else probs.add_(p)
    probs = probs.div_(len(options.scales) * len(flips))
    return guided_probs(probs, images, base) if options.guided_filter else probs
