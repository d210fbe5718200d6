"""Segmentation metrics accumulated over a whole split.

Every score is a FRACTION in [0, 1] (multiply by 100 for the percentages papers print).

One confusion matrix is accumulated over the split, never averaged per image. Ground-truth pixels labelled 255
or with any label outside 0..K-1 are dropped. A prediction outside 0..K-1 (for example 255 in a saved label map)
on a valid ground-truth pixel counts as a miss of the ground-truth class and as a hit of no class, which is how
the official Cityscapes evaluation scores predicted void ids.

Per class: IoU = TP / (TP + FP + FN), Acc = TP / (TP + FN). A class absent from both prediction and ground truth
has IoU NaN, a class with no ground-truth pixels has Acc NaN, and NaN classes are left out of the means
(mmsegmentation and Cityscapes convention). fwIoU weights IoU by ground-truth frequency.

Boundary IoU (Cheng et al., 2021): the boundary region of a class mask is the part of the mask within distance d
of its contour, the image edge included, with d = round(2% of the image diagonal), at least 1. Distance is the
chessboard distance, i.e. erosion by a (2d+1)×(2d+1) square, the same region as the reference implementation's d
erosions by a 3×3 kernel. Intersections and unions of the ground-truth and predicted boundary regions are summed
per class over the split; ignore pixels are excluded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from segrefine.data.meta import IGNORE_INDEX
from segrefine.engine.distributed import current
from segrefine.errors import SegrefineError

__all__ = ["IGNORE_INDEX", "MetricResult", "SegmentationMetrics", "boundary_radius", "boundary_region", "summary"]

BOUNDARY_RATIO = 0.02


def boundary_radius(height: int, width: int, ratio: float = BOUNDARY_RATIO) -> int:
    """Boundary width d in pixels: `ratio` of the image diagonal, rounded, at least 1."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def _window(x: Tensor, size: int, dim: int, op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """`op` (max, min, or) over every full window of `size` along `dim`, in O(log size) elementwise passes."""
    width = 1
    while 2 * width <= size:
        n = x.size(dim)
        x = op(x.narrow(dim, 0, n - width), x.narrow(dim, width, n - width))
        width *= 2
    if width < size:  # two overlapping windows of `width` cover one of `size`
        shift = size - width
        n = x.size(dim)
        x = op(x.narrow(dim, 0, n - shift), x.narrow(dim, shift, n - shift))
    return x


def boundary_region(labels: Tensor, radius: int) -> Tensor:
    """Pixels within chessboard distance `radius` of a differently labelled pixel or of the image edge.

    `labels` is (B×)H×W. For a class c, `boundary_region(labels, d) & (labels == c)` is the boundary region of the
    mask of c (the mask minus its erosion by a (2d+1)² square, the outside counted as background), so one call
    serves all classes at once.
    """
    d = radius
    # A square window holds two labels iff it holds two 4-adjacent pixels with different labels, so dilating the
    # label changes (cheap boolean ORs) replaces per-class erosions. Padding with True makes the edge a contour.
    # A horizontal change at column j sits between columns j and j+1: a window spans 2d of them, and 2d+1 rows.
    horizontal = F.pad(labels[..., :, 1:] != labels[..., :, :-1], (d, d, d, d), value=True)
    vertical = F.pad(labels[..., 1:, :] != labels[..., :-1, :], (d, d, d, d), value=True)
    near_horizontal = _window(_window(horizontal, 2 * d, -1, torch.logical_or), 2 * d + 1, -2, torch.logical_or)
    near_vertical = _window(_window(vertical, 2 * d + 1, -1, torch.logical_or), 2 * d, -2, torch.logical_or)
    return near_horizontal | near_vertical


def _nanmean(x: Tensor) -> float:
    return float(x.nanmean()) if not x.isnan().all() else math.nan


@dataclass(frozen=True)
class MetricResult:
    """Scores of one split, as fractions in [0, 1]; per-class tuples are indexed by train id, NaN where undefined."""

    aAcc: float
    mAcc: float
    mIoU: float
    fwIoU: float
    boundary_mIoU: float
    iou: tuple[float, ...]
    acc: tuple[float, ...]
    boundary_iou: tuple[float, ...]
    confusion: Tensor  # K×K int64 on the CPU, rows = ground truth, columns = prediction


class SegmentationMetrics:
    """Accumulates a confusion matrix and boundary-IoU counts over a split; `reduce()` sums them across processes.

    `boundary_ratio=None` turns boundary IoU off (its result is then NaN). Counts live on the device of the
    predictions passed to `update`.
    """

    def __init__(self, num_classes: int, *, boundary_ratio: float | None = BOUNDARY_RATIO) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if boundary_ratio is not None and boundary_ratio <= 0:
            raise ValueError(f"boundary_ratio must be positive, got {boundary_ratio}")
        self.num_classes = num_classes
        self.boundary_ratio = boundary_ratio
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        # Column K counts valid ground-truth pixels whose prediction is not a class (void ids, 255).
        self._counts = torch.zeros(k, k + 1, dtype=torch.int64)
        # Row 0: |Gd ∩ Pd| per class, row 1: |Gd ∪ Pd| per class.
        self._boundary = torch.zeros(2, k, dtype=torch.int64)

    @property
    def confusion(self) -> Tensor:
        """K×K int64 confusion matrix so far (rows = ground truth, columns = prediction)."""
        return self._counts[:, : self.num_classes]

    @property
    def boundary_counts(self) -> Tensor:
        """2×K int64: per class, boundary intersection |Gd ∩ Pd| (row 0) and union |Gd ∪ Pd| (row 1) so far."""
        return self._boundary

    def _classes_or_void(self, labels: Tensor) -> Tensor:
        """Labels with everything outside 0..K-1 (and 255) replaced by K."""
        k = self.num_classes
        is_class = (labels >= 0) & (labels < k) & (labels != IGNORE_INDEX)
        return torch.where(is_class, labels, k)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and ground-truth label maps (B×H×W or H×W, integer)."""
        if pred.shape != target.shape:
            raise SegrefineError(
                f"prediction size {tuple(pred.shape)} does not match label size {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("update() takes integer label maps, not scores; take argmax over classes first")
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        if pred.dim() != 3:
            raise ValueError(f"expected label maps of shape B×H×W or H×W, got {tuple(pred.shape)}")
        k = self.num_classes
        self._counts = self._counts.to(pred.device)
        self._boundary = self._boundary.to(pred.device)
        # int32 halves the memory of int64 labels; K+1 squared pairs still fit.
        gt = self._classes_or_void(target.to(device=pred.device, dtype=torch.int32))
        pr = self._classes_or_void(pred.to(torch.int32))
        valid = gt < k

        # Rows of void ground truth (index K) fall off the end: those pixels are dropped.
        pairs = (gt * (k + 1) + pr).flatten()
        self._counts += torch.bincount(pairs, minlength=(k + 1) ** 2).view(k + 1, k + 1)[:k]

        if self.boundary_ratio is not None:
            radius = boundary_radius(gt.shape[-2], gt.shape[-1], self.boundary_ratio)
            gt_edge = boundary_region(gt, radius) & valid
            pr_edge = boundary_region(pr, radius) & valid
            both = gt_edge & pr_edge & (gt == pr)
            gt_area = self._class_histogram(gt, gt_edge)
            pr_area = self._class_histogram(pr, pr_edge)
            inter = self._class_histogram(gt, both)
            self._boundary[0] += inter
            self._boundary[1] += gt_area + pr_area - inter

    def _class_histogram(self, labels: Tensor, mask: Tensor) -> Tensor:
        """Pixels per class among `labels` (classes or void K) where `mask` holds."""
        k = self.num_classes
        return torch.bincount(torch.where(mask, labels, k).flatten(), minlength=k + 1)[:k]

    def reduce(self) -> SegmentationMetrics:
        """Sum the counts of all torch.distributed processes into every process (in place; call once)."""
        if not current().distributed:
            return self
        flat = torch.cat([self._counts.flatten(), self._boundary.flatten()])
        if dist.get_backend() == "nccl":
            flat = flat.cuda()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        counts, boundary = flat.to(self._counts.device).split([self._counts.numel(), self._boundary.numel()])
        self._counts = counts.view_as(self._counts).clone()
        self._boundary = boundary.view_as(self._boundary).clone()
        return self

    def compute(self) -> MetricResult:
        """Scores from the counts so far."""
        k = self.num_classes
        counts = self._counts.cpu().double()
        tp = counts[:, :k].diagonal()
        gt_pixels = counts.sum(1)
        pred_pixels = counts[:, :k].sum(0)
        total = gt_pixels.sum()
        iou = tp / (gt_pixels + pred_pixels - tp)  # 0/0 -> NaN for classes absent from both
        acc = tp / gt_pixels
        inter, union = self._boundary.cpu().double()
        boundary_iou = inter / union if self.boundary_ratio is not None else torch.full((k,), math.nan)
        has_pixels = total > 0
        return MetricResult(
            aAcc=float(tp.sum() / total) if has_pixels else math.nan,
            mAcc=_nanmean(acc),
            mIoU=_nanmean(iou),
            fwIoU=float((gt_pixels / total * iou).nansum()) if has_pixels else math.nan,
            boundary_mIoU=_nanmean(boundary_iou),
            iou=tuple(iou.tolist()),
            acc=tuple(acc.tolist()),
            boundary_iou=tuple(boundary_iou.tolist()),
            confusion=self.confusion.cpu().clone(),
        )


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else x


def summary(result: MetricResult, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Plain JSON-ready dict of a result (fractions in [0, 1], NaN as None); classes keyed by name."""
    k = len(result.iou)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"got {len(names)} class names for {k} classes")
    return {
        "mIoU": _json_float(result.mIoU),
        "mAcc": _json_float(result.mAcc),
        "aAcc": _json_float(result.aAcc),
        "fwIoU": _json_float(result.fwIoU),
        "boundary_mIoU": _json_float(result.boundary_mIoU),
        "per_class": {
            name: {
                "iou": _json_float(result.iou[i]),
                "acc": _json_float(result.acc[i]),
                "boundary_iou": _json_float(result.boundary_iou[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion": result.confusion.tolist(),  # K×K counts, rows = ground truth, columns = prediction
    }
