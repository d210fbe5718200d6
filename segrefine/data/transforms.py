"""Joint image/label transforms (torchvision.transforms.v2 on tv_tensors.Image / tv_tensors.Mask).

They act on the dataset's sample dict {"image", "label", "name", "path"}; labels are only ever resized with
nearest neighbour, padded with 255 and permuted, so their values stay exact. Final output: image float32 3×h×w
normalised with the ImageNet mean/std, label int64 h×w.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
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
        if isinstance(item, torch.Tensor) and item.ndim >= 2:
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


class _ImageStep(v2.Transform):
    """A photometric step applied with probability `p` to images only (masks pass through untouched): subclasses
    draw their parameters in `draw` and change the image, as float in [0, 1], in `change`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def change(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define change() or override transform()")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        apply = torch.rand(()).item() < self.p
        return {"apply": apply, **self.draw(*_size(flat_inputs))}  # drawn either way: the stream stays aligned

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not isinstance(inpt, tv_tensors.Image):
            return inpt
        is_uint8 = inpt.dtype == torch.uint8
        x = inpt.as_subclass(torch.Tensor).float()
        x = self.change(x / 255.0 if is_uint8 else x, params).clamp_(0.0, 1.0)
        out = x.mul_(255.0).round_().to(torch.uint8) if is_uint8 else x.to(inpt.dtype)
        return tv_tensors.wrap(out, like=inpt)


class RandomWhiteBalance(_ImageStep):
    """A camera's colour cast: each channel multiplied by its own gain, log-uniform in [1/max_gain, max_gain].

    Other cameras, white balances and lighting tint a street differently; a network trained on one camera learns
    its tint (CamVid's grey asphalt reads as another class under a warmer camera) unless the tint varies in training.
    """

    def __init__(self, max_gain: float = 1.5, p: float = 0.8) -> None:
        super().__init__(p)
        if max_gain < 1:
            raise ValueError(f"max_gain must be >= 1, got {max_gain}")
        self.max_gain = float(max_gain)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {"gain": (torch.empty(3).uniform_(-1.0, 1.0) * math.log(self.max_gain)).exp()}

    def change(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return x * params["gain"].view(3, 1, 1)


class RandomGamma(_ImageStep):
    """A sensor's tone curve: x ** gamma (x in [0, 1]), gamma log-uniform in [1/max_gamma, max_gamma]."""

    def __init__(self, max_gamma: float = 1.5, p: float = 0.5) -> None:
        super().__init__(p)
        if max_gamma < 1:
            raise ValueError(f"max_gamma must be >= 1, got {max_gamma}")
        self.max_gamma = float(max_gamma)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {"gamma": math.exp(torch.empty(()).uniform_(-1.0, 1.0).item() * math.log(self.max_gamma))}

    def change(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return x.clamp(min=0).pow(params["gamma"])


class RandomSensorNoise(_ImageStep):
    """Gaussian read noise of a standard deviation drawn from [0, max_sigma] (in units of the full [0, 1] range)."""

    def __init__(self, max_sigma: float = 0.03, p: float = 0.2) -> None:
        super().__init__(p)
        self.max_sigma = float(max_sigma)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        sigma = torch.rand(()).item() * self.max_sigma
        return {"noise": torch.randn(3, height, width) * sigma}

    def change(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return x + params["noise"]


class RandomVignette(_ImageStep):
    """Lens vignetting: brightness falling off towards the corners, by up to `max_strength` there."""

    def __init__(self, max_strength: float = 0.4, p: float = 0.2) -> None:
        super().__init__(p)
        self.max_strength = float(max_strength)

    def draw(self, height: int, width: int) -> dict[str, Any]:
        strength = torch.rand(()).item() * self.max_strength
        y = torch.linspace(-1.0, 1.0, height).view(-1, 1)
        x = torch.linspace(-1.0, 1.0, width).view(1, -1)
        return {"falloff": 1.0 - strength * (x.square() + y.square()) / 2.0}  # 1 - strength in the corners

    def change(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        return x * params["falloff"]


class RandomJpeg(_ImageStep):
    """JPEG compression at a quality drawn from `quality` (through OpenCV: torchvision's own encoder is deprecated)."""

    def __init__(self, quality: tuple[int, int] = (30, 95), p: float = 0.3) -> None:
        super().__init__(p)
        if not 1 <= quality[0] <= quality[1] <= 100:
            raise ValueError(f"quality must be LOW,HIGH within 1..100, got {quality}")
        self.quality = (int(quality[0]), int(quality[1]))

    def draw(self, height: int, width: int) -> dict[str, Any]:
        return {"quality": int(torch.randint(self.quality[0], self.quality[1] + 1, ()).item())}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not params["apply"] or not isinstance(inpt, tv_tensors.Image) or inpt.dtype != torch.uint8:
            return inpt
        rgb = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).contiguous().numpy()
        ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, params["quality"]])
        if not ok:  # OpenCV without a JPEG codec: leave the image as it is
            return inpt
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()
        return tv_tensors.wrap(torch.from_numpy(decoded).permute(2, 0, 1).contiguous(), like=inpt)


PHOTOMETRIC = ("none", "jitter", "camera")


def photometric_steps(kind: str) -> list[v2.Transform]:
    """The image-only distortions of training; labels pass through them untouched.

    `jitter`: mmsegmentation's PhotoMetricDistortion (contrast and saturation 0.5-1.5, hue ±18°).
    `camera`: what changes between cameras: white balance, tone curve, stronger colour, monochrome, lens blur,
    sensor noise, JPEG compression and vignetting, so that the network does not key on one camera's rendering.
    """
    if kind == "none":
        return []
    if kind == "jitter":
        return [v2.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05)]
    if kind == "camera":
        return [
            RandomWhiteBalance(max_gain=1.5, p=0.8),
            RandomGamma(max_gamma=1.5, p=0.5),
            v2.ColorJitter(brightness=0.3, contrast=0.5, saturation=0.6, hue=0.08),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
            RandomSensorNoise(max_sigma=0.03, p=0.2),
            RandomJpeg((30, 95), p=0.3),
            RandomVignette(max_strength=0.4, p=0.2),
        ]
    raise ValueError(f"photometric must be one of {', '.join(PHOTOMETRIC)}, got {kind!r}")


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
    photometric: str = "jitter",
) -> v2.Compose:
    """Random scale, random crop (padding image 0 / label 255 where the image is smaller), flip, photometric
    distortion (see `photometric_steps`), normalise."""
    size = (crop, crop) if isinstance(crop, int) else tuple(crop)
    steps: list[v2.Transform] = [
        RandomScale(scale),
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}),
        RandomFlip(0.5, flip_pairs),
        *photometric_steps(photometric),
    ]
    return v2.Compose(steps + _to_model_input())


def eval_transform() -> v2.Compose:
    """Whole image: only the float conversion and normalisation."""
    return v2.Compose(_to_model_input())
