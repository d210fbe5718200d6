"""The segmentation network: backbone → CRM → SRM decoder → fusion → (memory) → classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segrefine.models.backbone import ResNetBackbone
from segrefine.models.config import ModelConfig
from segrefine.models.crm import ContextualRefinement
from segrefine.models.fusion import Fusion
from segrefine.models.layers import conv_bn_relu, memory_format
from segrefine.models.memory import ClassMemory
from segrefine.models.registry import VARIANTS
from segrefine.models.srm import SemanticRefinement

LEVELS = ("c4", "c3", "c2")  # decoder levels, coarse to fine
FUSED = ("c5", "c4", "c3")  # pyramid levels brought to the 1/4 grid for the fusion (c2 is that grid)


def _resize(x: Tensor, size: torch.Size | tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SegRefineNet(nn.Module):
    """In eval mode: B×3×H×W → B×K×H×W logits. In train mode: a dict with "out", "aux", "memory_logits", "features"."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        spec = VARIANTS[config.variant]
        d, k = spec.width, config.num_classes
        self.backbone = ResNetBackbone(spec.backbone, config.ibn)
        c2, c3, c4, c5 = self.backbone.channels
        self.crm = ContextualRefinement(self.backbone.channels, d, d, config.crm)
        self.lateral = nn.ModuleDict({name: conv_bn_relu(c, d, 1) for name, c in zip(LEVELS, (c4, c3, c2))})
        def srm() -> SemanticRefinement:
            return SemanticRefinement(d, config.srm, config.srm_kernel, config.srm_mask, config.srm_local)

        self.srm = nn.ModuleDict({name: srm() for name in LEVELS})
        self.smooth = nn.ModuleDict({name: conv_bn_relu(d, d, 3) for name in LEVELS})
        # srm_fusion: align the coarser pyramid levels to the finest one with an SRM each before they are
        # concatenated (as SFNet does), instead of bilinear upsampling.
        self.fusion_srm = (
            nn.ModuleDict({name: srm() for name in FUSED})
            if config.srm_fusion and config.srm != "bilinear" else None
        )
        self.fusion = Fusion(d, len(FUSED) + 1, spec.fusion_kernel)
        self.memory = ClassMemory(d, k, config.memory_dim or d) if config.memory else None
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(d, k, 1))
        self.aux_head = (
            nn.Sequential(conv_bn_relu(c4, d, 3), nn.Dropout2d(0.1), nn.Conv2d(d, k, 1)) if config.aux else None
        )

    def to_fine(self, name: str, coarse: Tensor, fine: Tensor, values: Tensor) -> Tensor:
        """`values`, made from the pyramid level `coarse`, on `fine`'s grid: upsampled, or warped as `fusion_srm`
        aligns `coarse` to `fine`."""
        if self.fusion_srm is None:
            return _resize(values, fine.shape[-2:])
        return self.fusion_srm[name](fine, coarse, values)

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        size, layout = x.shape[-2:], memory_format(x)
        if x.device.type == "cpu" and not torch.compiler.is_exporting():
            # oneDNN's CPU convolutions run 10-20% faster channels-last, and NCHW max pooling is slower still: the
            # network runs channels-last inside and gives its logits back in the input's layout.
            x = x.contiguous(memory_format=torch.channels_last)
        c2, c3, c4, c5 = self.backbone(x)
        p = self.crm((c2, c3, c4, c5))
        pyramid = [p]
        for name, c in zip(LEVELS, (c4, c3, c2)):
            lateral = self.lateral[name](c)
            p = self.smooth[name](self.srm[name](lateral, p) + lateral)
            pyramid.append(p)
        fused = self.fusion(dict(zip(FUSED, pyramid)), pyramid[-1], self.to_fine)
        if self.memory is not None:
            fused, class_logits, features = self.memory(fused)
        logits = _resize(self.classifier(fused).contiguous(memory_format=layout), size)
        if not self.training:
            return logits
        outputs = {"out": logits}
        if self.aux_head is not None:
            outputs["aux"] = _resize(self.aux_head(c4), size)
        if self.memory is not None:
            outputs["memory_logits"] = _resize(class_logits, size)
            outputs["features"] = features
        return outputs
