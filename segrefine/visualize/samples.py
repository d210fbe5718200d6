"""Dataset samples: image | ground truth | overlay, and prediction against ground truth with an error map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segrefine.data.transforms import normalize
from segrefine.engine.device import model_device
from segrefine.engine.inference import InferenceOptions, class_labels, predict_probs
from segrefine.visualize.draw import (IGNORE_COLOR, Image, arrange, colorize, font_px, framed, label_array,
    legend, overlay, text_block, titled, to_rgb, upscale, vstack)  # fmt: skip

CORRECT = (46, 160, 67)
WRONG = (214, 39, 40)
IGNORED = (90, 90, 90)


def _class_entries(
    maps: Sequence[np.ndarray], classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> list[tuple[str, Sequence[int]]]:
    """Legend entries for the classes present in any of `maps`, most frequent first, plus ignore if present."""
    counts = np.zeros(256, np.int64)
    for m in maps:
        counts += np.bincount(np.clip(m, 0, 255).ravel(), minlength=256)[:256]
    order = [int(c) for c in np.argsort(-counts[: len(classes)], kind="stable") if counts[c] > 0]
    entries = [(classes[c], palette[c]) for c in order]
    if counts[len(classes) :].sum():
        entries.append(("ignore", IGNORE_COLOR))
    return entries


def _compose(header: str, panels: Sequence[Image], names: Sequence[str], legends: Sequence[Sequence[tuple]]) -> Image:
    """Titled panels in rows under a header line, legends below, one font size throughout."""
    panels = [upscale(p) for p in panels]
    px = font_px(arrange(panels).shape[1], lo=14, hi=26)
    grid = arrange([titled(p, name, px) for p, name in zip(panels, names)])
    footer = [legend(entries, grid.shape[1], px) for entries in legends if entries]
    return framed(vstack([text_block([header], grid.shape[1], px), grid, *footer]))


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "0%"


def sample_picture(
    image: Tensor | np.ndarray,
    label: Tensor | np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    title: str = "",
) -> Image:
    """Image, ground truth and overlay side by side, with a legend of the classes present."""
    rgb, gt = to_rgb(image), label_array(label)
    panels = [rgb, colorize(gt, palette), overlay(rgb, gt, palette)]
    header = title or f"{gt.shape[0]}×{gt.shape[1]}"
    return _compose(header, panels, ("image", "ground truth", "overlay"), [_class_entries([gt], classes, palette)])


def error_map(
    image: Tensor | np.ndarray, label: Tensor | np.ndarray, prediction: Tensor | np.ndarray, ignore_index: int = 255,
    alpha: float = 0.6,
) -> Image:
    """Correct pixels green, wrong ones red, ignored ones grey, blended over a grey version of the image."""
    gt, pred = label_array(label), label_array(prediction)
    gray = to_rgb(image).mean(axis=2, keepdims=True).repeat(3, axis=2)
    colors = np.full_like(gray, CORRECT)
    colors[gt != pred] = WRONG
    colors[gt == ignore_index] = IGNORED
    return (alpha * colors + (1 - alpha) * gray).round().astype(np.uint8)


def prediction_picture(
    image: Tensor | np.ndarray,
    label: Tensor | np.ndarray,
    prediction: Tensor | np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    title: str = "",
    ignore_index: int = 255,
) -> Image:
    """Image | ground truth | prediction | error map, headed by the image's pixel accuracy, with legends."""
    rgb, gt, pred = to_rgb(image), label_array(label), label_array(prediction)
    if gt.shape != pred.shape or gt.shape != rgb.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]}, label {gt.shape} and prediction {pred.shape} sizes differ")
    valid = gt != ignore_index
    wrong = int((valid & (gt != pred)).sum())
    total, labelled = gt.size, int(valid.sum())
    accuracy = f"pixel accuracy {_share(labelled - wrong, labelled)}" if labelled else "no labelled pixels"
    panels = [rgb, colorize(gt, palette), colorize(pred, palette),
              error_map(rgb, gt, pred, ignore_index)]  # fmt: skip
    errors = [
        (f"correct {_share(labelled - wrong, total)}", CORRECT),
        (f"wrong {_share(wrong, total)}", WRONG),
        (f"ignore {_share(total - labelled, total)}", IGNORED),
    ]
    header = f"{title} | {accuracy}" if title else accuracy
    names = ("image", "ground truth", "prediction", "errors")
    return _compose(header, panels, names, [_class_entries([gt, pred], classes, palette), errors])


def predict_labels(
    model: torch.nn.Module, image: Tensor, options: InferenceOptions | None = None, *, num_classes: int, **settings: Any
) -> Tensor:
    """H×W train ids of one uint8 3×H×W image; `options` (or its fields as keywords), `flip_pairs` and `out_size` are
    those of `predict_probs` (default: one whole-image pass at the image's size, then the guided filter)."""
    x = normalize(image[None].to(model_device(model)))
    return class_labels(predict_probs(model, x, options, num_classes=num_classes, **settings))[0].cpu()
