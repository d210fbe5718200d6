"""Small building blocks shared by the network's modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def memory_format(x: Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor laid out so (and not also plain contiguous), else contiguous_format."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format
