"""Choosing the device a command runs on."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from segrefine.errors import SettingError


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a model with neither."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` is CUDA when available, else CPU; any torch device string (cpu, cuda, cuda:1, mps) otherwise."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise SettingError(f"`device` must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SettingError(f"`device` {device}: CUDA is not available on this machine (use `device` cpu)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise SettingError(f"`device` {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise SettingError(f"`device` {device}: MPS is not available on this machine (use `device` cpu)")
    return resolved
