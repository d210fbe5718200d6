"""The network of the two seed papers, built from an explicit variant registry."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from segrefine.models.config import CRM_MODES, SRM_KERNELS, SRM_MASKS, SRM_MODES, ModelConfig
from segrefine.models.registry import VARIANTS
from segrefine.models.segmenter import OUTPUT_STRIDE, SegRefineNet


def build_model(config: ModelConfig | None = None, **overrides: Any) -> SegRefineNet:
    """Build a network from a config, e.g. `build_model(variant="lite", num_classes=19, memory=True)`."""
    config = replace(config or ModelConfig(), **overrides)
    return SegRefineNet(config)


__all__ = ["build_model", "ModelConfig", "OUTPUT_STRIDE", "SegRefineNet", "VARIANTS", "SRM_MODES", "SRM_MASKS", "SRM_KERNELS", "CRM_MODES"]
