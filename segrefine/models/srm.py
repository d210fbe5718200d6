"""Semantic Refinement Module: upsampling with learned, neighbour-aware per-pixel offsets.

Offset convention: the output at fine pixel p samples the coarse map at p + Δ(p), with Δ in fine-pixel units and
(x, y) order. Both `F.interpolate` and `F.grid_sample` use align_corners=False, so Δ = 0 is exactly bilinear
upsampling.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.models.layers import memory_format

# Opt-in, read once (SEGREFINE_TRITON_WARP=1): the mask, neighbourhood sum and warp as one Triton kernel (srm_warp)
# wherever nothing wants gradients, on CUDA. Off until gpu_check.py's "lite, triton warp" rows show it faster.
TRITON_WARP = os.environ.get("SEGREFINE_TRITON_WARP") == "1" and importlib.util.find_spec("triton") is not None


def triton_warp_applies(values: Tensor) -> bool:
    """Whether the fused Triton kernel warps `values`: switched on, CUDA, forward only (no gradients), no export."""
    return TRITON_WARP and values.is_cuda and not torch.is_grad_enabled() and not torch.compiler.is_exporting()


def base_grid(height: int, width: int, like: Tensor) -> Tensor:
    """Normalised (x, y) coordinates of the pixel centres of a height×width grid, shape 1×H×W×2."""
    ys = (torch.arange(height, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / height) - 1.0
    xs = (torch.arange(width, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / width) - 1.0
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)


def warp(source: Tensor, offset: Tensor) -> Tensor:
    """Sample `source` (B×C×h×w) at each pixel of the offset's H×W grid shifted by offset (B×2×H×W, pixels)."""
    height, width = offset.shape[-2:]
    offset = offset.float()  # under bf16 autocast a bf16 grid would misplace samples by up to a pixel near the edges
    # Pixels to normalised units by plain numbers, not a tensor made of them: an export with dynamic sizes keeps these
    # symbolic instead of freezing the traced size's.
    shift = torch.stack((offset[:, 0] * (2.0 / width), offset[:, 1] * (2.0 / height)), dim=-1)
    grid = base_grid(height, width, offset) + shift
    if torch.compiler.is_exporting():
        return gather_bilinear(source, grid)
    if grid.dtype != source.dtype and not torch.is_autocast_enabled(source.device.type):
        grid = grid.to(source.dtype)  # grid_sample takes one dtype, unless autocast runs it in fp32
    sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # grid_sample writes NCHW whatever the source's layout: a channels-last network stays channels-last here rather
    # than mixing layouts in the next add and converting inside the next convolution.
    return sampled.contiguous(memory_format=memory_format(source))


def gather_bilinear(source: Tensor, grid: Tensor) -> Tensor:
    """`F.grid_sample(source, grid)` (bilinear, border padding, align_corners=False) as four gathers of whole pixels.

    The same numbers (to float rounding) from plain indexing: onnxruntime's GridSample computes the coordinates again
    for every channel and runs 2-5x slower than gathering each corner's C values at once.
    """
    batch, channels, height, width = source.shape
    out_height, out_width = grid.shape[1:3]
    # Normalised → source pixel coordinates, clamped to the border; corner (x0 + 1) past the edge has weight 0.
    x = (((grid[..., 0] + 1) * width - 1) / 2).clamp(0, width - 1)
    y = (((grid[..., 1] + 1) * height - 1) / 2).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    pixels = source.permute(0, 2, 3, 1).reshape(batch * height * width, channels)
    first = (torch.arange(batch, device=source.device) * (height * width)).view(batch, 1, 1)

    def corner(yy: Tensor, xx: Tensor, weight: Tensor) -> Tensor:
        return pixels[(first + yy * width + xx).reshape(-1)].view(batch, out_height, out_width, channels) * weight

    # Corner weights on the H×W grid, then four products with C channels each (not two lerps per axis: fewer passes).
    sampled = (
        corner(y0, x0, (1 - wx) * (1 - wy)) + corner(y0, x1, wx * (1 - wy))
        + corner(y1, x0, (1 - wx) * wy) + corner(y1, x1, wx * wy)
    )  # fmt: skip
    # NCHW as grid_sample gives it (a permuted view would leave the exporter guessing the layout per batch size).
    return sampled.permute(0, 3, 1, 2).contiguous()


def aggregate_offsets(offset: Tensor, mask: Tensor, kernel: int) -> Tensor:
    """Ultimate offset: each pixel's k×k neighbourhood of initial offsets, weighted by its mask (B×k²×H×W)."""
    if kernel == 1:
        return offset * mask
    height, width = offset.shape[-2:]
    padded = F.pad(offset, [kernel // 2] * 4, mode="replicate")
    # A sum of k² shifted views: the neighbourhood F.unfold would gather, without its B×2k²×H×W copy.
    total = padded[..., :height, :width] * mask[:, :1]
    for j in range(1, kernel * kernel):
        dy, dx = divmod(j, kernel)
        total = torch.addcmul(total, padded[..., dy : dy + height, dx : dx + width], mask[:, j : j + 1])
    return total


class SemanticRefinement(nn.Module):
    """Align and upsample a coarse map to a fine map's grid (`mode`: bilinear | flow | full)."""

    def __init__(
        self, channels: int, mode: str = "full", kernel: int = 3, mask: str = "softmax", local: bool = False
    ) -> None:
        super().__init__()
        self.mode, self.kernel, self.mask_activation, self.local = mode, kernel, mask, local
        if mode == "bilinear":
            return
        half = channels // 2
        self.reduce_coarse = nn.Conv2d(channels, half, 1, bias=False)
        self.reduce_fine = nn.Conv2d(channels, half, 1, bias=False)
        self.offset = nn.Conv2d(2 * half, 2, 3, padding=1)
        # Zero offsets at start: an untrained module is exactly bilinear upsampling.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        if mode == "full":
            self.mask = nn.Conv2d(2 * half, kernel * kernel, 3, padding=1)

    def fields(self, fine: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor | None]:
        """The initial offsets (B×2×H×W, fine pixels) and the mask's logits (B×k²×H×W; None for srm=flow)."""
        # Reduce, then upsample: a 1×1 convolution commutes with bilinear interpolation (a per-channel weighted mean of
        # pixels), so this equals reducing the upsampled map, with half the channels to upsample and a quarter of the
        # convolution's work.
        reduced = F.interpolate(self.reduce_coarse(coarse), size=fine.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat((reduced, self.reduce_fine(fine)), dim=1)
        if self.mode == "flow":
            offset, logits = self.offset(x), None
        else:  # offset and mask from one convolution: one pass over x instead of two
            weight = torch.cat((self.offset.weight, self.mask.weight))
            bias = torch.cat((self.offset.bias, self.mask.bias))
            offset, logits = F.conv2d(x, weight, bias, padding=1).split((2, self.kernel * self.kernel), dim=1)
        if self.local:
            # Alignment, not long-range resampling: each initial offset stays within one coarse cell (a smooth
            # bound: cell·tanh(Δ/cell), the identity near zero), so the mask-weighted mean does too.
            cell_x, cell_y = fine.shape[-1] / coarse.shape[-1], fine.shape[-2] / coarse.shape[-2]
            offset = torch.cat((cell_x * torch.tanh(offset[:, :1] / cell_x), cell_y * torch.tanh(offset[:, 1:] / cell_y)), 1)
        return offset, logits

    def offsets(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """The ultimate offset field (B×2×H×W, fine pixels) for aligning `coarse` onto `fine`'s grid."""
        offset, logits = self.fields(fine, coarse)
        if logits is None:
            return offset
        if self.mask_activation == "softmax":
            weights = logits.softmax(dim=1)
        else:
            weights = logits.sigmoid()
            weights = weights / weights.sum(dim=1, keepdim=True)
        return aggregate_offsets(offset, weights, self.kernel)

    def forward(self, fine: Tensor, coarse: Tensor, values: Tensor | None = None) -> Tensor:
        """`coarse` aligned and upsampled to `fine`'s grid; or `values` (on `coarse`'s grid) moved as `coarse` is."""
        values = coarse if values is None else values
        if self.mode == "bilinear":
            return F.interpolate(values, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        if triton_warp_applies(values):
            from segrefine.models.srm_warp import fused_warp  # triton imported only when asked for

            return fused_warp(values, *self.fields(fine, coarse), self.kernel, self.mask_activation)
        return warp(values, self.offsets(fine, coarse))
