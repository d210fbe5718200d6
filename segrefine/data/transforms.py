"""Joint image/label transforms (torchvision.transforms.v2 on tv_tensors.Image / tv_tensors.Mask).

They act on the dataset's sample dict {"image", "label", "name", "path"}; labels are only ever resized with
nearest neighbour, padded with 255 and permuted, so their values stay exact. Final output: image float32 3×h×w
normalised with the ImageNet mean/std, label int64 h×w.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from segrefine.data.meta import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (…×3×H×W, or float in [0, 1]) -> float32 ImageNet-normalised."""
    x = image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()
    mean = x.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised float (…×3×H×W) -> uint8 RGB, for drawing."""
    mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _size(flat_inputs: list[Any]) -> tuple[int, int]:
    for item in flat_inputs:
        if isinstance(item, (tv_tensors.Image, tv_tensors.Mask)) or (
            isinstance(item, torch.Tensor) and item.ndim >= 2
        ):
            height, width = F.get_size(item)
            return height, width
    raise TypeError("no image or mask in the sample")


class RandomScale(v2.Transform):
    """Resize by a ratio drawn uniformly from `ratio_range` (images bilinear with antialias, masks nearest)."""

    def __init__(self, ratio_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        low, high = ratio_range
        if not 0 < low <= high:
            raise ValueError(f"scale range {ratio_range} must satisfy 0 < low <= high")
        self.ratio_range = (float(low), float(high))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = _size(flat_inputs)
        ratio = torch.empty(()).uniform_(*self.ratio_range).item()
        return {"size": [max(1, round(height * ratio)), max(1, round(width * ratio))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.resize, inpt, size=params["size"], antialias=True)


class RandomFlip(v2.RandomHorizontalFlip):
    """Horizontal flip that also swaps left/right class pairs (LIP: left-arm <-> right-arm, ...) in masks."""

    def __init__(self, p: float = 0.5, flip_pairs: Sequence[Sequence[int]] = ()) -> None:
        super().__init__(p)
        self.flip_pairs = tuple((int(a), int(b)) for a, b in flip_pairs)
        swap = torch.arange(256)
        for a, b in self.flip_pairs:
            if not (0 <= a < IGNORE_INDEX and 0 <= b < IGNORE_INDEX):
                raise ValueError(f"flip pair ({a}, {b}) must be class ids below {IGNORE_INDEX}")
            swap[a], swap[b] = b, a
        self._swap = swap if self.flip_pairs else None

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if self._swap is not None and isinstance(out, tv_tensors.Mask):
            out = tv_tensors.wrap(self._swap[out.long()].to(out.dtype), like=out)
        return out


def _to_model_input() -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.ToPureTensor(),
    ]


def train_transform(
    crop: int | tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    flip_pairs: Sequence[Sequence[int]] = (),
    jitter: bool = True,
) -> v2.Compose:
    """Random scale, random crop (padding image 0 / label 255 where the image is smaller), flip, jitter, normalise."""
    size = (crop, crop) if isinstance(crop, int) else tuple(crop)
    steps: list[v2.Transform] = [
        RandomScale(scale),
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        RandomFlip(0.5, flip_pairs),
    ]
    if jitter:
        # close to mmsegmentation's PhotoMetricDistortion: contrast and saturation 0.5-1.5, hue ±18°
        steps.append(v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05))
    return v2.Compose(steps + _to_model_input())


def eval_transform() -> v2.Compose:
    """Whole image: only the float conversion and normalisation."""
    return v2.Compose(_to_model_input())
