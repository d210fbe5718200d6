"""The explicit registry of network variants."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VariantSpec:
    backbone: str
    width: int  # decoder width d, also the CRM stage width c
    fusion_kernel: int  # the fusion conv at 1/4: 1×1 keeps `lite` inside its FLOP budget, 3×3 as in SFNet
    description: str


VARIANTS: dict[str, VariantSpec] = {
    "lite": VariantSpec("resnet18", 128, 1, "ResNet-18, d=128: the paper's lightweight budget (≤137.9 GMACs at 1024×2048)"),
    "base": VariantSpec("resnet50", 256, 3, "ResNet-50, d=256"),
    "large": VariantSpec("resnet101", 256, 3, "ResNet-101, d=256"),
}
