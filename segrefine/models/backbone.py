"""ResNet backbones from torchvision that return the four stage features C2..C5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import Tensor, nn

from segrefine.errors import SegrefineError


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[..., torchvision.models.ResNet]
    channels: tuple[int, int, int, int]
    imagenet_repo: str  # timm repo on the Hub whose state-dict keys match torchvision's ResNet


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(torchvision.models.resnet18, (64, 128, 256, 512), "timm/resnet18.a1_in1k"),
    "resnet50": BackboneSpec(torchvision.models.resnet50, (256, 512, 1024, 2048), "timm/resnet50.a1_in1k"),
    "resnet101": BackboneSpec(torchvision.models.resnet101, (256, 512, 1024, 2048), "timm/resnet101.a1h_in1k"),
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


def load_imagenet_weights(backbone: ResNetBackbone, state: dict[str, Tensor], source: str) -> None:
    """Load an ImageNet classifier state dict into the backbone; the classifier (`fc.*`) is dropped.

    Strict: any missing or unexpected key, or any shape mismatch, is an error naming them.
    """
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f" … ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise SegrefineError(f"{source} does not fit backbone {backbone.name}: " + "; ".join(problems))
    with torch.no_grad():
        backbone.load_state_dict(state, strict=True)
