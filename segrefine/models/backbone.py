"""ResNet backbones from torchvision that return the four stage features C2..C5."""

from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import Tensor, nn


# ImageNet weights for these live on the Hub; their sources are in the model-zoo registry (segrefine/hub/zoo.json).
BACKBONES: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}


IBN_STAGES = ("layer1", "layer2", "layer3")  # IBN-Net (IBN-a) leaves the last stage all BatchNorm: it keeps content


class InstanceBatchNorm(nn.Module):
    """IBN-a's normalisation (Pan et al., 2018): instance norm on the first half of the channels, batch norm on the rest.

    Instance statistics remove each image's own contrast and colour cast from those channels, which is what lets
    features carry over to other cameras; the BatchNorm half keeps what discriminates. A plain BatchNorm's weights
    load into it (split at the same channel), so a network trained without IBN can be fine-tuned with it.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.split = channels // 2
        self.IN = nn.InstanceNorm2d(self.split, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.split)

    def forward(self, x: Tensor) -> Tensor:
        instance, batch = torch.split(x, (self.split, x.shape[1] - self.split), dim=1)
        return torch.cat((self.IN(instance), self.BN(batch)), dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        if prefix + "weight" in state_dict:  # a plain BatchNorm's state: give the IN half its affine, the BN half all
            for name in ("weight", "bias", "running_mean", "running_var"):
                instance, batch = state_dict.pop(prefix + name).split((self.split, self.BN.num_features))
                if name in ("weight", "bias"):
                    state_dict[prefix + "IN." + name] = instance
                state_dict[prefix + "BN." + name] = batch
            if prefix + "num_batches_tracked" in state_dict:
                state_dict[prefix + "BN.num_batches_tracked"] = state_dict.pop(prefix + "num_batches_tracked")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its classifier; parameter names match torchvision (and timm) exactly.

    `ibn`: each block of the first three stages normalises the output of its first convolution with
    InstanceBatchNorm (IBN-a).
    """

    def __init__(self, name: str, ibn: bool = False) -> None:
        super().__init__()
        net = BACKBONES[name](weights=None)
        if ibn:
            for stage in IBN_STAGES:
                for block in getattr(net, stage):
                    block.bn1 = InstanceBatchNorm(block.bn1.num_features)
        self.name = name
        c5 = net.fc.in_features  # the widths of C2..C5: each stage doubles the one before
        self.channels = (c5 // 8, c5 // 4, c5 // 2, c5)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5
