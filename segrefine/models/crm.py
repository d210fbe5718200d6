"""Contextual Refinement Module: attention over all four backbone stages at 1/32."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.models.layers import conv_bn_relu


def pool_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of x to `size`; under torch.export as products with averaging matrices, which stay
    exact for every input size of a dynamic-shape export (the exported AveragePool keeps the traced input's kernel)."""
    if not torch.compiler.is_exporting():
        divisible = x.shape[-2] % size[0] == 0 and x.shape[-1] % size[1] == 0
        # Off the CPU, whole blocks as a plain reduction: CUDA's channels-last adaptive pooling kernel took 181 µs per
        # call at 1024×2048 on an H200, and torch.compile leaves windows above 25 pixels to that kernel. The CPU keeps
        # the kernel its speed figures were measured with.
        if divisible and x.device.type != "cpu":
            return block_mean(x, size)
        return F.adaptive_avg_pool2d(x, size)
    rows = _averaging_matrix(x.shape[-2], size[0], x)
    cols = _averaging_matrix(x.shape[-1], size[1], x)
    return rows @ x @ cols.transpose(0, 1)


def block_mean(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of x to `size` when `size` divides x's grid: the mean of each whole block."""
    rows, cols = x.shape[-2] // size[0], x.shape[-1] // size[1]
    return x.unflatten(-1, (size[1], cols)).unflatten(-3, (size[0], rows)).mean((-3, -1))


def _averaging_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """n_out×n_in weights of adaptive pooling: output i averages inputs ⌊i·n_in/n_out⌋ up to ⌈(i+1)·n_in/n_out⌉."""
    i = torch.arange(n_out, device=like.device)
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    j = torch.arange(n_in, device=like.device)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


class ChannelAttention(nn.Module):
    """C×C affinity between channels (DANet-style), added residually with a scale that starts at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def affinity(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        return (flat @ flat.transpose(1, 2) / math.sqrt(flat.shape[-1])).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2).unsqueeze(1)  # one head: the ONNX exporter takes 4-d attention only
        # Fused attention computes softmax(flat·flatᵀ/√N)·flat, the product with `affinity`, without keeping the map.
        attended = F.scaled_dot_product_attention(flat, flat, flat).view_as(x)
        return x + self.gamma * attended


class SpatialAttention(nn.Module):
    """N×N affinity between positions with query/key at C/8, added residually with a scale that starts at 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def affinity(self, x: Tensor) -> Tensor:
        q = self.query(x).flatten(2).transpose(1, 2)  # B×N×C'
        k = self.key(x).flatten(2)  # B×C'×N
        return (q @ k / math.sqrt(k.shape[1])).softmax(dim=-1)  # B×N×N, rows are queries

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (layer(x).flatten(2).transpose(1, 2).unsqueeze(1) for layer in (self.query, self.key, self.value))
        # Fused attention, softmax(q·kᵀ/√C')·v as with `affinity`, without materialising the N×N map.
        attended = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(x.shape)
        return x + self.gamma * attended


class GateAttention(nn.Module):
    """CBAM-style pooled channel gate then spatial gate: the cheap alternative to full attention."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        # Global pooling as reductions over H, W rather than adaptive pooling to 1×1: the same numbers, without the
        # adaptive kernels' window arithmetic (slow on channels-last CUDA maps, and left uncompiled by torch.compile).
        pooled = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        x = x * pooled.sigmoid()
        stats = torch.cat((x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)), dim=1)
        return x * self.spatial(stats).sigmoid()


class ContextualRefinement(nn.Module):
    """Four stages → one d-channel map at 1/32 (`mode`: off | gate | attention)."""

    def __init__(self, in_channels: tuple[int, int, int, int], width: int, out_channels: int, mode: str = "attention") -> None:
        super().__init__()
        self.mode = mode
        if mode == "off":
            self.project = conv_bn_relu(in_channels[-1], out_channels, 1)
            return
        self.squeeze = nn.ModuleList(conv_bn_relu(c, width, 1) for c in in_channels)
        aggregated = 4 * width
        if mode == "attention":
            self.channel_attention = ChannelAttention()
            self.spatial_attention = SpatialAttention(aggregated)
        else:
            self.gate = GateAttention(aggregated)
        self.project = conv_bn_relu(aggregated, out_channels, 1)

    def aggregate(self, features: tuple[Tensor, ...]) -> Tensor:
        """Bring every stage to the C5 grid (adaptive average pooling) and concatenate."""
        size = features[-1].shape[-2:]
        squeezed = [squeeze(f) for squeeze, f in zip(self.squeeze, features)]
        return torch.cat([pool_to(s, size) for s in squeezed[:-1]] + [squeezed[-1]], dim=1)

    def forward(self, features: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        if self.mode == "off":
            return self.project(features[-1])
        z = self.aggregate(features)
        if self.mode == "attention":
            z = self.spatial_attention(self.channel_attention(z))
        else:
            z = self.gate(z)
        return self.project(z)
