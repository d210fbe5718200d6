"""Class boundaries snapped to the image's edges: a guided filter (He, Sun and Tang) of the class probabilities,
with the image's gray level as guide.

The network labels a grid of one cell per `LABEL_STRIDE` (4) input pixels; bilinear upsampling of its logits blurs a
class boundary over about one cell, which thickens thin objects (poles, traffic-light arms) by that much. The filter
fits each class's probability as a linear function of the gray level over windows of 3×3 cells of `FIT_STRIDE` input
pixels, and applies the fits at full size (the fast guided filter of He and Sun: coefficients fitted on the coarse grid,
interpolated like the logits), so a boundary follows the image's edge within its label cell. The filter is linear in
the probabilities: each pixel's still sum to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segrefine.data.transforms import denormalize
from segrefine.models import LABEL_STRIDE

__all__ = ["EPS", "FIT_STRIDE", "guided_filter", "guided_probs"]

# Input pixels per cell of the grid the fits are made on: half a label cell. Fitting over whole label cells (a 12-pixel
# window) trimmed boundaries as well, but averaged thin objects of low contrast away (CamVid val Pole IoU -3.6 points
# for the shipped model, against -0.5 at this size; `benchmarks/guided_filter.py --fit-stride 4`).
FIT_STRIDE = LABEL_STRIDE // 2

# Regularisation of the fit, in squared gray levels of [0, 1]: edges of a contrast well above sqrt(EPS) ≈ 0.03
# steer a boundary; fainter texture leaves the network's probabilities as they are.
EPS = 1e-3


def _box(x: Tensor) -> Tensor:
    """Mean over the 3×3 window around each pixel, the window clipped to the image."""
    # A depthwise convolution of a channels-last map: on the CPU over ten times faster than avg_pool2d.
    channels, size = x.shape[1], x.shape[-2:]
    x = x.contiguous(memory_format=torch.channels_last)
    total = F.conv2d(x, x.new_ones(channels, 1, 3, 3), padding=1, groups=channels)
    count = F.conv2d(x.new_ones(1, 1, *size), x.new_ones(1, 1, 3, 3), padding=1)
    return total / count


def guided_filter(guide: Tensor, src: Tensor, grid: tuple[int, int], eps: float = EPS) -> Tensor:
    """B×C×H×W `src` filtered with the B×1×H×W `guide`, the linear fits made over 3×3 cells of an h×w `grid`."""
    size, channels = src.shape[-2:], src.shape[1]
    guide_low, src_low = F.interpolate(guide, size=grid, mode="area"), F.interpolate(src, size=grid, mode="area")
    # One box filter for the four window means the fit needs.
    means = _box(torch.cat((guide_low, src_low, guide_low * guide_low, guide_low * src_low), dim=1))
    mean_g, mean_s, mean_gg, mean_gs = means.split((1, channels, 1, channels), dim=1)
    a = (mean_gs - mean_g * mean_s) / (mean_gg - mean_g * mean_g + eps)
    b = mean_s - a * mean_g
    a, b = _box(torch.cat((a, b), dim=1)).split(channels, dim=1)
    a, b = (F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (a, b))
    return a.mul_(guide).add_(b)


def guided_probs(probs: Tensor, images: Tensor, net_size: tuple[int, int]) -> Tensor:
    """B×K×H×W class probabilities refined along the edges of the normalised B×3×h×w `images` (resized to H×W),
    for a network that ran on `net_size` inputs."""
    gray = denormalize(images.float()).float().mean(1, keepdim=True).div_(255.0)
    if gray.shape[-2:] != probs.shape[-2:]:
        gray = F.interpolate(gray, size=probs.shape[-2:], mode="bilinear", align_corners=False)
    grid = (max(1, round(net_size[0] / FIT_STRIDE)), max(1, round(net_size[1] / FIT_STRIDE)))
    return guided_filter(gray, probs.float(), grid)
