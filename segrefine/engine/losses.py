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


def cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy averaged over the labelled pixels (each weighted by its class's `weight`), as F.cross_entropy's
    mean; 0 for a batch without any: F.cross_entropy gives NaN there, and training stopped as diverged."""
    pixel_loss = _cross_entropy(logits, target, weight=weight, reduction="none")
    labelled = target != IGNORE_INDEX
    if weight is not None:
        labelled = weight[target.clamp(max=logits.shape[1] - 1)] * labelled
    total = labelled.sum()
    return pixel_loss.sum() / torch.where(total > 0, total, 1)  # no host sync for the check


def ohem_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, thresh: float = 0.7, min_kept: int = 100_000
) -> Tensor:
    """Cross-entropy over the hard pixels: those whose ground-truth probability is below `thresh`, and at least the
    `min_kept` hardest (mmsegmentation's OHEM pixel sampler); `weight` scales each class's pixels."""
    pixel_loss = _cross_entropy(logits, target, weight=weight, reduction="none")
    valid = target != IGNORE_INDEX
    if not valid.any():  # (outside no_grad: the zero keeps its graph, for backward)
        return pixel_loss.sum() * 0.0
    with torch.no_grad():
        prob = logits.float().softmax(dim=1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1))[:, 0]
        valid_prob = prob[valid]
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
    main = ohem_cross_entropy if kind == "ohem" else cross_entropy
    parts = {"main": main(outputs["out"], target, class_weight)}
    if "aux" in outputs:
        parts["aux"] = main(outputs["aux"], target, class_weight)
    if "memory_logits" in outputs:
        parts["memory"] = cross_entropy(outputs["memory_logits"], target)
    parts["total"] = parts["main"] + AUX_WEIGHT * parts.get("aux", 0.0) + MEMORY_WEIGHT * parts.get("memory", 0.0)
    return parts
