"""CRM attention: the C×C channel affinity as a heat map, and the spatial affinity of chosen query points.

The CRM concatenates four stages (C2..C5), each squeezed to C/4 channels, so the channel matrix has 4×4 blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from segrefine.errors import SettingError
from segrefine.visualize.draw import (
    INK,
    PAPER,
    Image,
    apply_colormap,
    arrange,
    font_px,
    framed,
    matrix_picture,
    text_block,
    titled,
    to_rgb,
    upscale,
    vstack,
)

STAGES = ("C2", "C3", "C4", "C5")


def channel_picture(affinity: Tensor, title: str = "CRM channel attention") -> Image:
    """C×C channel affinity (rows: output channels, softmax over the columns) as a heat map with stage blocks."""
    values = affinity.float().cpu()
    size = values.shape[0]
    block = size // len(STAGES) if size % len(STAGES) == 0 else 0
    labels = None
    if block:
        labels = [STAGES[i // block] if i % block == block // 2 else "" for i in range(size)]
    # A few strong entries would otherwise wash out the rest: clip the colour scale at the 99.5th percentile.
    vmax = float(torch.quantile(values.flatten()[:: max(1, values.numel() // 1_000_000)], 0.995))
    return matrix_picture(
        values.numpy(), title=f"{title} ({size}x{size}, colour scale clipped at the 99.5th percentile)",
        vmin=0.0, vmax=max(vmax, 1e-12), cmap="magma", row_labels=labels, col_labels=labels,
        row_title="channel (query)", col_title="channel (key)",
        separators=[i * block for i in range(1, len(STAGES))] if block else (),
    )  # fmt: skip


def default_points(height: int, width: int) -> list[tuple[int, int]]:
    """Four query points spread over the image: the centres of its quarters."""
    return [(height * i // 4, width * j // 4) for i in (1, 3) for j in (1, 3)]


def check_points(points: Sequence[tuple[int, int]], height: int, width: int) -> None:
    """Every (y, x) point must lie inside the height×width image."""
    for y, x in points:
        if not (0 <= y < height and 0 <= x < width):
            raise SettingError(f"`points`: point {y},{x} is outside the {height}×{width} image (y,x order)")


def spatial_maps(affinity: Tensor, grid: tuple[int, int], points: Sequence[tuple[int, int]], size: tuple[int, int]) -> Tensor:
    """The attention rows of the grid cells holding each (y, x) point of an H×W image: P×h×w."""
    h, w = grid
    height, width = size
    rows = [min(h - 1, y * h // height) * w + min(w - 1, x * w // width) for y, x in points]
    return affinity[rows].view(len(points), h, w)


def spatial_picture(
    image: Tensor | np.ndarray,
    affinity: Tensor,
    grid: tuple[int, int],
    points: Sequence[tuple[int, int]],
    title: str = "CRM spatial attention",
) -> Image:
    """For each query point, its attention over the 1/32 grid, upsampled over the image; the query cell is boxed.

    Each map's colours run from its smallest weight (blue) to its largest (red): softmax weights over hundreds of
    positions differ little in absolute terms.
    """
    rgb = to_rgb(image)
    height, width = rgb.shape[:2]
    check_points(points, height, width)
    shown = upscale(rgb, interpolation=cv2.INTER_LINEAR)
    factor = shown.shape[0] / height
    h, w = grid
    maps = spatial_maps(affinity.float().cpu(), grid, points, (height, width))
    px = font_px(shown.shape[1], lo=14)
    panels = []
    for (y, x), attention in zip(points, maps):
        low, peak = float(attention.min()), float(attention.max())
        smooth = F.interpolate(attention[None, None], size=shown.shape[:2], mode="bilinear", align_corners=False)[0, 0]
        heat = apply_colormap(smooth.numpy(), low, peak, "turbo")
        panel = (0.45 * shown + 0.55 * heat).round().astype(np.uint8)
        cell_y, cell_x = min(h - 1, y * h // height), min(w - 1, x * w // width)
        top_left = (round(cell_x * width / w * factor), round(cell_y * height / h * factor))
        bottom_right = (round((cell_x + 1) * width / w * factor), round((cell_y + 1) * height / h * factor))
        thickness = max(2, round(px / 8))
        cv2.rectangle(panel, top_left, bottom_right, INK, thickness + 2)
        cv2.rectangle(panel, top_left, bottom_right, PAPER, thickness)
        centre = (round(x * factor), round(y * factor))
        cv2.circle(panel, centre, thickness + 2, INK, -1, cv2.LINE_AA)
        cv2.circle(panel, centre, thickness, PAPER, -1, cv2.LINE_AA)
        panels.append(titled(panel, f"query y={y}, x={x}: weights {low:.3g} (blue) to {peak:.3g} (red)", px))
    grid_picture = arrange(panels)
    lines = [title, f"each map: the query's softmax weights over the {h}x{w} grid (1/32 of the image), upsampled"]
    return framed(vstack([text_block(lines, grid_picture.shape[1], px), grid_picture]))
