"""The network's parts (backbone, CRM, SRM, fusion, class memory), its switches and the variant registry."""

from __future__ import annotations

from segrefine.models.config import CRM_MODES, LABEL_STRIDE, OUTPUT_STRIDE, SRM_KERNELS, SRM_MASKS, SRM_MODES, ModelConfig
from segrefine.models.fold import fold_batchnorm
from segrefine.models.registry import VARIANTS

__all__ = ["ModelConfig", "LABEL_STRIDE", "OUTPUT_STRIDE", "VARIANTS", "SRM_MODES", "SRM_MASKS", "SRM_KERNELS", "CRM_MODES", "fold_batchnorm"]
