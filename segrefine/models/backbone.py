"""ResNet backbones from torchvision that return the four stage features C2..C5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torchvision
from torch import Tensor, nn


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., torchvision.models.ResNet]
    channels: tuple[int, int, int, int]


# ImageNet weights for these live on the Hub; their sources are in the model-zoo registry (segrefine/hub/zoo.json).
BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(torchvision.models.resnet18, (64, 128, 256, 512)),
    "resnet50": BackboneSpec(torchvision.models.resnet50, (256, 512, 1024, 2048)),
    "resnet101": BackboneSpec(torchvision.models.resnet101, (256, 512, 1024, 2048)),
}


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; parameter names match torchvision (and timm) exactly."""

    def __init__(self, name: str) -> None:
        super().__init__()
        spec = BACKBONES[name]
        net = spec.build(weights=None)
        self.name = name
        self.channels = spec.channels
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5
