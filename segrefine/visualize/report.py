"""Pictures of an evaluation report (`segrefine eval --json`, or a run's eval.json): per-class IoU and confusion."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segrefine.errors import SegrefineError
from segrefine.imageio import read_json
from segrefine.visualize.draw import (
    INK,
    MISSING,
    MUTED,
    PAPER,
    Image,
    framed,
    matrix_picture,
    put_text,
    text_size,
    titled,
)

BAR = (70, 130, 180)


def read_report(path: str | Path) -> dict[str, Any]:
    """Read and check an eval JSON: it needs "per_class" {name: {"iou": fraction or null, ...}}."""
    report = read_json(path, "eval report")
    per_class = report.get("per_class") if isinstance(report, dict) else None
    if not isinstance(per_class, dict) or not per_class or not all(
        isinstance(v, dict) and "iou" in v for v in per_class.values()
    ):
        raise SegrefineError(f"{path} is not an eval report: it needs \"per_class\" {{name: {{\"iou\": ...}}}}")
    for name, scores in per_class.items():
        iou = scores["iou"]
        if iou is not None and not (isinstance(iou, (int, float)) and not isinstance(iou, bool) and 0 <= iou <= 1):
            raise SegrefineError(f"{path}: the \"iou\" of class {name!r} must be a fraction in [0, 1] or null, got {iou!r}")
    confusion = report.get("confusion")
    if confusion is not None:
        k = len(per_class)
        matrix = np.asarray(confusion, dtype=object)
        if matrix.shape != (k, k) or not all(isinstance(v, (int, float)) and v >= 0 for v in matrix.ravel()):
            raise SegrefineError(f"{path}: \"confusion\" must be a {k}×{k} matrix of counts (one row per class)")
    return report


def iou_chart(report: Mapping[str, Any], title: str = "per-class IoU") -> Image:
    """Horizontal bars of per-class IoU, best first; classes without a score (absent) last, marked n/a."""
    scores = [(name, math.nan if v.get("iou") is None else float(v["iou"])) for name, v in report["per_class"].items()]
    scores.sort(key=lambda item: (math.isnan(item[1]), -np.nan_to_num(item[1], nan=0.0)))
    px = 15 if len(scores) <= 40 else 12
    row = round(px * 1.9)
    label_width = max(text_size(name, px)[0] for name, _ in scores) + round(px)
    bar_width = 640
    value_width = text_size("0.000", px)[0] + round(px)
    axis = round(px * 2.2)
    width = label_width + bar_width + value_width
    canvas = np.full((row * len(scores) + axis, width, 3), PAPER, np.uint8)
    x0 = label_width
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = x0 + round(tick * bar_width)
        canvas[: row * len(scores), x] = MISSING
        tw, _ = text_size(f"{tick:g}", px)
        put_text(canvas, f"{tick:g}", x - tw // 2, row * len(scores) + round(px * 1.6), px, MUTED)
    for i, (name, iou) in enumerate(scores):
        top, middle = i * row, i * row + (row + px) // 2
        tw, _ = text_size(name, px)
        put_text(canvas, name, label_width - round(px * 0.5) - tw, middle, px)
        if math.isnan(iou):
            put_text(canvas, "n/a (absent)", x0 + round(px * 0.4), middle, px, MUTED)
            continue
        end = x0 + round(iou * bar_width)
        pad = max(2, row // 6)
        canvas[top + pad : top + row - pad, x0 : max(end, x0 + 1)] = BAR
        put_text(canvas, f"{iou:.3f}", end + round(px * 0.4), middle, px)
    canvas[: row * len(scores), x0] = INK
    summary = [f"{key} {report[key]:.3f}" for key in ("mIoU", "mAcc", "aAcc") if isinstance(report.get(key), (int, float))]
    heading = " | ".join([title, *summary])
    return titled(framed(canvas, 16), heading, 18)


def confusion_picture(
    confusion: Sequence[Sequence[float]] | np.ndarray, classes: Sequence[str], title: str = "confusion matrix"
) -> Image:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction) with class labels."""
    counts = np.asarray(confusion, np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(totals > 0, counts / totals, np.nan)  # classes absent from the ground truth: grey rows
    return matrix_picture(
        rates, title=f"{title} (each row sums to 1; grey: class absent from the ground truth)", vmin=0.0, vmax=1.0,
        cmap="blues", row_labels=list(classes), col_labels=list(classes), row_title="ground truth",
        col_title="prediction", annotate="{:.0%}",
    )  # fmt: skip
