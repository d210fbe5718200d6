"""Segmentation losses: cross-entropy, OHEM cross-entropy, and the weighted sum over the network's heads."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from segrefine.data.meta import IGNORE_INDEX

AUX_WEIGHT = 0.4  # auxiliary head; this and the next: the weights of the MCIBI reference code (Jin et al., ICCV 2021)
MEMORY_WEIGHT = 0.4  # class-probability head of the memory block
_cross_entropy = partial(F.cross_entropy, ignore_index=IGNORE_INDEX)


def ohem_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, thresh: float = 0.7, min_kept: int = 100_000
) -> Tensor:
    """Cross-entropy over the hard pixels: those whose ground-truth probability is below `thresh`, and at least the
    `min_kept` hardest (mmsegmentation's OHEM pixel sampler); `weight` scales each class's pixels."""
    pixel_loss = _cross_entropy(logits, target, weight=weight, reduction="none")
    valid = target != IGNORE_INDEX
    with torch.no_grad():
        prob = logits.float().softmax(dim=1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
        valid_prob = prob[valid]
        if valid_prob.numel() == 0:
            return pixel_loss.sum() * 0.0
        threshold = torch.tensor(thresh, device=prob.device, dtype=prob.dtype)
        if min_kept > 0:
            kth = valid_prob.kthvalue(min(min_kept, valid_prob.numel())).values
            threshold = torch.maximum(threshold, kth)
        keep = valid & (prob <= threshold)
    return pixel_loss[keep].mean()


def segmentation_loss(
    outputs: dict[str, Tensor], target: Tensor, kind: str = "ce", class_weight: Tensor | None = None
) -> dict[str, Tensor]:
    """Loss parts of one step ("main", and "aux" / "memory" when the network has those heads) and their weighted
    "total"; `class_weight` (K) weights the classes in the main and auxiliary losses."""
    main = ohem_cross_entropy if kind == "ohem" else _cross_entropy
    parts = {"main": main(outputs["out"], target, class_weight)}
    if "aux" in outputs:
        parts["aux"] = main(outputs["aux"], target, class_weight)
    if "memory_logits" in outputs:
        parts["memory"] = _cross_entropy(outputs["memory_logits"], target)
    parts["total"] = parts["main"] + AUX_WEIGHT * parts.get("aux", 0.0) + MEMORY_WEIGHT * parts.get("memory", 0.0)
    return parts
