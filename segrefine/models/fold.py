"""Inference-time folding of BatchNorm into the convolution before it."""

from __future__ import annotations

import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segrefine.models.backbone import ResNetBackbone

# Modules that apply `bnN` to the output of `convN` and to nothing else (torchvision's ResNet and its blocks, our
# backbone, which keeps torchvision's names); in an nn.Sequential a convolution's output goes to the next entry.
NAMED_PAIRS = (torchvision.models.ResNet, torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck,
               ResNetBackbone)  # fmt: skip


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """`model` in eval mode with every BatchNorm that directly follows a convolution folded into its weights and bias.

    For inference only (the folded network has other parameters and cannot go on training); outputs are those of the
    unfolded network in eval mode, to float rounding, one normalisation pass fewer per convolution.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            pairs = [(str(i), str(i + 1)) for i in range(len(module) - 1)]
        elif isinstance(module, NAMED_PAIRS):
            names = [name for name, _ in module.named_children() if name.startswith("conv")]
            pairs = [(name, "bn" + name.removeprefix("conv")) for name in names]
        else:
            continue
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model
