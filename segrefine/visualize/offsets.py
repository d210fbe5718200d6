"""SRM offset fields: a colour-coded flow image (hue = direction, saturation = magnitude) and sparse arrows.

An offset Δ(p) says where the output at fine pixel p samples the coarse map (SRM convention): an arrow runs
from p to p + Δ(p). Fields are shown in image pixels (level pixels × the level's stride).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import flow_to_image

from segrefine.visualize.draw import (INK, Image, font_px, framed, hstack,
    overlay, text_block, titled, to_rgb, upscale, vstack)  # fmt: skip

ARROW = (255, 221, 0)


def to_image_pixels(offset: Tensor, size: tuple[int, int]) -> Tensor:
    """A level's 2×h×w offset field (level pixels) resampled to the image's H×W grid, in image pixels."""
    height, width = size
    h, w = offset.shape[-2:]
    scale = offset.new_tensor([width / w, height / h]).view(2, 1, 1)
    resized = F.interpolate(offset[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return resized * scale


def _wheel(diameter: int) -> Image:
    """The flow colour key: direction as hue, length as saturation, on a white disc."""
    r = torch.linspace(-1, 1, diameter)
    y, x = torch.meshgrid(r, r, indexing="ij")
    inside = (x**2 + y**2) <= 1
    flow = torch.stack((x, y)) * inside
    wheel = to_rgb(flow_to_image(flow))
    wheel[~inside.numpy()] = 255
    cv2.circle(wheel, (diameter // 2, diameter // 2), diameter // 2, INK, 1, cv2.LINE_AA)
    return wheel


def flow_picture(offset: Tensor) -> Image:
    """2×H×W offsets -> torchvision's flow colour image, normalised to the longest offset (white where zero)."""
    return to_rgb(flow_to_image(offset.float()))


def arrows_picture(image: Tensor | np.ndarray, offset: Tensor, spacing: int | None = None) -> tuple[Image, float]:
    """Sparse arrows p -> p + k·Δ(p) over a dimmed image (Δ in image pixels); returns (picture, k).

    k scales the longest arrow to 90% of the arrow spacing, so sub-pixel fields stay visible; the title says k.
    """
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    spacing = spacing or max(12, round(max(height, width) / 20))
    picture = (0.6 * rgb).astype(np.uint8)  # dimmed, so the arrows stand out
    # From the middle of the first cell, or of the image where it is thinner than a cell.
    ys = torch.arange(min(spacing, height) // 2, height, spacing)
    xs = torch.arange(min(spacing, width) // 2, width, spacing)
    samples = offset[:, ys][:, :, xs]  # 2×ny×nx
    longest = float(samples.norm(dim=0).max()) if samples.numel() else 0.0
    if longest < 1e-6:
        return picture, 0.0
    k = 0.9 * spacing / longest
    thickness = max(1, round(spacing / 16))
    for i, y in enumerate(ys.tolist()):
        for j, x in enumerate(xs.tolist()):
            dx, dy = (k * samples[:, i, j]).tolist()
            if dx * dx + dy * dy < 1.0:
                cv2.circle(picture, (x, y), thickness, ARROW, -1, cv2.LINE_AA)
                continue
            end = (round(x + dx), round(y + dy))
            cv2.arrowedLine(picture, (x, y), end, (0, 0, 0), thickness + 2, cv2.LINE_AA, tipLength=0.35)
            cv2.arrowedLine(picture, (x, y), end, ARROW, thickness, cv2.LINE_AA, tipLength=0.35)
    return picture, k


def offsets_picture(
    image: Tensor | np.ndarray,
    offsets: Mapping[str, Tensor],
    *,
    prediction: Tensor | np.ndarray | None = None,
    palette: Sequence[Sequence[int]] = (),
    title: str = "",
) -> Image:
    """Per decoder level: flow colour image | arrows over the image; a first row shows the image and prediction."""
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    shown = upscale(rgb, interpolation=cv2.INTER_LINEAR)
    factor = shown.shape[0] / height
    px = font_px(2 * shown.shape[1], lo=14, hi=26)  # two panels side by side
    first = [titled(shown, "image", px)]
    if prediction is not None:
        first.append(titled(upscale(overlay(rgb, prediction, palette)), "prediction", px))
    rows = [hstack(first)]
    for level, offset in offsets.items():
        field = to_image_pixels(offset, shown.shape[:2])  # pixels of the shown picture
        magnitude = float(field.norm(dim=0).max()) / factor
        stride = round(width / offset.shape[-1])
        arrows, k = arrows_picture(shown, field)
        flow_title = f"{level} (1/{stride}): max |offset| {magnitude:.2f} px"
        arrow_title = f"{level} arrows x{k:.3g}" if k else f"{level}: zero offsets (plain bilinear)"
        rows.append(hstack([titled(flow_picture(field), flow_title, px), titled(arrows, arrow_title, px)]))
    lines = [
        title or "SRM offset fields",
        "colour: direction as hue (key), length as saturation",
        "arrows: where each pixel samples the coarser map (x scale)",
    ]
    key = _wheel(round(px * 5))
    text = text_block(lines, max(r.shape[1] for r in rows) - key.shape[1] - round(px), px)
    return framed(vstack([hstack([text, key], gap=round(px)), *rows], gap=round(px)))
