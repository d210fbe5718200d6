"""Random networks whose normalisation layers look trained, for tests that compare two ways of running them."""

import torch
from torch import nn


def trained_looking(model: nn.Module, seed: int = 1) -> nn.Module:
    """`model` in eval mode with random affine parameters and running statistics in every norm layer: a fresh one's
    (weight 1, bias 0, mean 0, variance 1) would hide mix-ups of the two and predict one class everywhere."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
                nn.init.uniform_(module.weight, 0.5, 1.5)
                nn.init.uniform_(module.bias, -0.5, 0.5)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()
