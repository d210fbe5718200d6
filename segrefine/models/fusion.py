"""The fusion at 1/4: every pyramid level on the finest grid, concatenated, through one conv-BN-ReLU."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.models.layers import conv_bn_relu

# to_fine(name, coarse, fine, values): `values`, computed from the level `coarse`, brought to `fine`'s grid.
ToFine = Callable[[str, Tensor, Tensor, Tensor], Tensor]


class Fusion(nn.Sequential):
    """conv(k×k)-BN-ReLU over `levels` maps of `channels` each (parameters named as in `conv_bn_relu`).

    With a 1×1 kernel the convolution runs per level, but its BatchNorm still follows the (linear) sum of their outputs,
    so folding it into the convolution's weights stays exact.
    """

    def __init__(self, channels: int, levels: int, kernel: int) -> None:
        super().__init__(*conv_bn_relu(levels * channels, channels, kernel))

    def forward(self, coarse: Mapping[str, Tensor], fine: Tensor, to_fine: ToFine) -> Tensor:  # type: ignore[override]
        conv, norm, activation = self
        if conv.kernel_size != (1, 1):
            moved = [to_fine(name, q, fine, q) for name, q in coarse.items()]
            return activation(norm(conv(torch.cat(moved + [fine], dim=1))))
        # A 1×1 convolution of the concatenation is a sum of one 1×1 convolution per level, and it commutes with
        # upsampling and warping (both take per-channel weighted means of pixels): each coarse level is convolved on
        # its own small grid before it is brought to the fine one, without the concatenation and at a third of the
        # work. The same numbers, to float rounding.
        weights = conv.weight.split(fine.shape[1], dim=1)
        x = F.conv2d(fine, weights[-1], conv.bias)
        for (name, q), weight in zip(coarse.items(), weights):
            x = x + to_fine(name, q, fine, F.conv2d(q, weight))
        return activation(norm(x))
