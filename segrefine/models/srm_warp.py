"""The SRM's mask, neighbourhood sum and bilinear warp as one Triton kernel, for inference (forward only).

Imported only when `srm.TRITON_WARP` is on, so that `import segrefine` never imports triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from segrefine.models.layers import memory_format


@triton.jit
def _warp_kernel(
    source, offset, logits, out, channels, height, width, out_height, out_width,
    s_b, s_c, s_y, s_x, o_b, o_c, o_y, o_x, l_b, l_c, l_y, l_x, r_b, r_c, r_y, r_x,
    KERNEL: tl.constexpr, MASK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """One block of output pixels × channels: the ultimate offset of each pixel, then its four-corner sample."""
    b = tl.program_id(2).to(tl.int64)  # int64 addresses: batch × stride may pass 2³¹
    pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    inside = pixel < out_height * out_width
    y, x = pixel // out_width, pixel % out_width
    offset += b * o_b
    logits += b * l_b + y * l_y + x * l_x
    # The mask-weighted mean of the k×k initial offsets (replicate padding), normalised once at the end: softmax
    # (less the max, for range), sigmoid, or a weight of 1 for a lone offset (srm=flow).
    peak = tl.zeros([BLOCK_P], tl.float32)
    if MASK == "softmax":
        peak = tl.full([BLOCK_P], float("-inf"), tl.float32)
        for j in tl.static_range(KERNEL * KERNEL):
            peak = tl.maximum(peak, tl.load(logits + j * l_c, mask=inside, other=0.0).to(tl.float32))
    total = tl.zeros([BLOCK_P], tl.float32)
    shift_x = tl.zeros([BLOCK_P], tl.float32)
    shift_y = tl.zeros([BLOCK_P], tl.float32)
    for j in tl.static_range(KERNEL * KERNEL):
        ny = tl.minimum(tl.maximum(y + (j // KERNEL - KERNEL // 2), 0), out_height - 1)
        nx = tl.minimum(tl.maximum(x + (j % KERNEL - KERNEL // 2), 0), out_width - 1)
        weight = tl.full([BLOCK_P], 1.0, tl.float32)
        if MASK == "softmax":
            weight = tl.exp(tl.load(logits + j * l_c, mask=inside, other=0.0).to(tl.float32) - peak)
        if MASK == "sigmoid":
            weight = tl.sigmoid(tl.load(logits + j * l_c, mask=inside, other=0.0).to(tl.float32))
        at = offset + ny * o_y + nx * o_x
        total += weight
        shift_x += weight * tl.load(at, mask=inside, other=0.0).to(tl.float32)
        shift_y += weight * tl.load(at + o_c, mask=inside, other=0.0).to(tl.float32)
    # warp()'s arithmetic: normalised grid coordinates, then grid_sample's (align_corners=False) source pixels,
    # clamped to the border; the corner past the edge (x0 + 1) then has weight 0.
    grid_x = (x + 0.5) * (2.0 / out_width) - 1.0 + shift_x / total * (2.0 / out_width)
    grid_y = (y + 0.5) * (2.0 / out_height) - 1.0 + shift_y / total * (2.0 / out_height)
    sx = tl.minimum(tl.maximum(((grid_x + 1) * width - 1) / 2, 0.0), width - 1.0)
    sy = tl.minimum(tl.maximum(((grid_y + 1) * height - 1) / 2, 0.0), height - 1.0)
    x0, y0 = tl.floor(sx), tl.floor(sy)
    wx, wy = (sx - x0)[:, None], (sy - y0)[:, None]
    x0, y0 = x0.to(tl.int32), y0.to(tl.int32)
    x1, y1 = tl.minimum(x0 + 1, width - 1), tl.minimum(y0 + 1, height - 1)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    keep = inside[:, None] & (channel < channels)[None, :]
    pixels = source + b * s_b + channel[None, :] * s_c
    sampled = (
        tl.load(pixels + (y0 * s_y + x0 * s_x)[:, None], mask=keep, other=0.0).to(tl.float32) * ((1 - wx) * (1 - wy))
        + tl.load(pixels + (y0 * s_y + x1 * s_x)[:, None], mask=keep, other=0.0).to(tl.float32) * (wx * (1 - wy))
        + tl.load(pixels + (y1 * s_y + x0 * s_x)[:, None], mask=keep, other=0.0).to(tl.float32) * ((1 - wx) * wy)
        + tl.load(pixels + (y1 * s_y + x1 * s_x)[:, None], mask=keep, other=0.0).to(tl.float32) * (wx * wy)
    )  # fmt: skip
    target = out + b * r_b + channel[None, :] * r_c + (y * r_y + x * r_x)[:, None]
    tl.store(target, sampled.to(out.dtype.element_ty), mask=keep)


def fused_warp(source: Tensor, offset: Tensor, logits: Tensor | None, kernel: int, mask: str) -> Tensor:
    """`warp(source, aggregate_offsets(offset, weights, kernel))`, the weights `mask` (softmax | sigmoid) of `logits`.

    `logits` None: `offset` is already the ultimate one (srm=flow). One pass, computed in float32, written in the
    source's dtype and layout (channels-last stays channels-last).
    """
    batch, channels, height, width = source.shape
    out_height, out_width = offset.shape[-2:]
    out = torch.empty(
        (batch, channels, out_height, out_width), dtype=source.dtype, device=source.device,
        memory_format=memory_format(source),
    )  # fmt: skip
    weights = offset if logits is None else logits  # not read when there are no logits
    # A channels-last pixel's C values are contiguous: a block covers up to 128 of them, 2048 values in all (untuned).
    block_c = min(128, triton.next_power_of_2(channels))
    block_p = 2048 // block_c
    grid = (triton.cdiv(out_height * out_width, block_p), triton.cdiv(channels, block_c), batch)
    _warp_kernel[grid](
        source, offset, weights, out, channels, height, width, out_height, out_width,
        *source.stride(), *offset.stride(), *weights.stride(), *out.stride(),
        KERNEL=1 if logits is None else kernel, MASK="none" if logits is None else mask,
        BLOCK_P=block_p, BLOCK_C=block_c,
    )  # fmt: skip
    return out
