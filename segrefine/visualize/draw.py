"""Drawing helpers shared by every picture: text, panels, layouts, colour maps, heat-map matrices, PNG I/O.

Pictures are H×W×3 uint8 RGB numpy arrays throughout; opencv draws on them in place (its colour tuples are taken
as given, so RGB stays RGB) and only `write_png` / `read_image` convert to and from opencv's BGR files. Drawn text
is ASCII: opencv before 5.0 renders nothing else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid

from segrefine import imageio

Image = np.ndarray  # H×W×3 uint8 RGB
Color = tuple[int, int, int]

FONT = cv2.FONT_HERSHEY_SIMPLEX
_CAP_HEIGHT = 22.0  # height in pixels of a capital letter at font scale 1
PAPER: Color = (255, 255, 255)
INK: Color = (30, 30, 30)
MUTED: Color = (120, 120, 120)
MISSING: Color = (200, 200, 200)  # NaN cells of heat maps
IGNORE_COLOR: Color = (0, 0, 0)


def font_px(width: int, lo: int = 13, hi: int = 34) -> int:
    """A legible capital-letter height for text on a canvas `width` pixels wide."""
    return int(min(hi, max(lo, round(width / 48))))


def _font(px: float) -> tuple[float, int]:
    scale = px / _CAP_HEIGHT
    return scale, max(1, round(scale * 1.6))


def text_size(text: str, px: float) -> tuple[int, int]:
    """(width, height of capitals) of `text` drawn at capital height `px`."""
    scale, thickness = _font(px)
    (width, height), _ = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height


def put_text(canvas: Image, text: str, x: int, y: int, px: float, color: Color = INK) -> None:
    """Draw `text` with its baseline's left end at (x, y), anti-aliased, in place."""
    scale, thickness = _font(px)
    cv2.putText(canvas, text, (int(x), int(y)), FONT, scale, color, thickness, cv2.LINE_AA)


def fit_px(text: str, px: float, width: int, lo: float = 9) -> float:
    """`px`, shrunk so that `text` fits in `width` pixels (never below `lo`)."""
    w, _ = text_size(text, px)
    return px if w <= width else max(lo, px * width / max(w, 1))


def text_block(lines: Sequence[str], width: int, px: float) -> Image:
    """Lines of left-aligned text on paper, `width` pixels wide."""
    pad = round(px * 0.5)
    line_height = round(px * 1.8)
    block = np.full((line_height * len(lines) + pad, width, 3), PAPER, np.uint8)
    for i, line in enumerate(lines):
        size = fit_px(line, px, width - 2 * pad)
        put_text(block, line, pad, pad + round(line_height * i + px * 1.3), size)
    return block


def titled(panel: Image, title: str, px: float) -> Image:
    """`panel` under a title bar."""
    return np.concatenate([text_block([title], panel.shape[1], px), panel])


def rotated_text(text: str, px: float, color: Color = INK) -> Image:
    """`text` on paper, rotated to read bottom to top (for vertical axis labels)."""
    width, height = text_size(text, px)
    strip = np.full((round(height * 1.7), width + 4, 3), PAPER, np.uint8)
    put_text(strip, text, 2, round(height * 1.3), px, color)
    return np.ascontiguousarray(np.rot90(strip))


def to_rgb(image: Tensor | np.ndarray) -> Image:
    """A uint8 3×H×W tensor (or H×W×3 array) as a contiguous H×W×3 uint8 array."""
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        image = image.permute(1, 2, 0).numpy() if image.dim() == 3 and image.shape[0] == 3 else image.numpy()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got {image.dtype} of shape {image.shape}")
    return np.ascontiguousarray(image)


def upscale(image: Image, min_side: int = 256, interpolation: int = cv2.INTER_NEAREST) -> Image:
    """Enlarge a small picture (toy data) by an integer factor until its shorter side reaches `min_side`."""
    factor = math.ceil(min_side / max(1, min(image.shape[:2])))
    if factor <= 1:
        return image
    return cv2.resize(image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=interpolation)


def _stack(panels: Sequence[Image], gap: int, axis: int) -> Image:
    """Panels side by side (axis 1) or one below the other (axis 0), padded with paper and `gap` apart."""
    across = max(p.shape[1 - axis] for p in panels)
    parts = []
    for i, panel in enumerate(panels):
        pad = [(0, 0)] * 3
        pad[axis] = (gap if i else 0, 0)
        pad[1 - axis] = (0, across - panel.shape[1 - axis])
        parts.append(np.pad(panel, pad, constant_values=PAPER[0]))
    return np.concatenate(parts, axis=axis)


def hstack(panels: Sequence[Image], gap: int = 8) -> Image:
    return _stack(panels, gap, axis=1)


def vstack(panels: Sequence[Image], gap: int = 8) -> Image:
    return _stack(panels, gap, axis=0)


def arrange(panels: Sequence[Image], max_width: int = 2400, gap: int = 8) -> Image:
    """Panels of one size in rows, as many per row as fit in `max_width` (at least one), `gap` apart on paper."""
    if len(panels) == 1:  # make_grid returns a lone panel without its padding, which the crop below would cut into
        return panels[0]
    columns = max(1, min(len(panels), (max_width + gap) // (panels[0].shape[1] + gap)))
    tensors = [torch.from_numpy(p).permute(2, 0, 1) for p in panels]
    grid = make_grid(tensors, nrow=columns, padding=gap, pad_value=PAPER[0])[:, gap:-gap, gap:-gap]  # no outer margin
    return np.ascontiguousarray(grid.permute(1, 2, 0).numpy())


def framed(image: Image, margin: int = 12) -> Image:
    """`image` with a paper margin all round."""
    return cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=PAPER)


def label_array(label: Tensor | np.ndarray) -> np.ndarray:
    """A label map (tensor or array) as an int64 array."""
    return (label.detach().cpu().numpy() if isinstance(label, Tensor) else np.asarray(label)).astype(np.int64)


def colorize(label: Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> Image:
    """Label map H×W -> RGB with the palette; ignore and unknown ids are black."""
    return imageio.colorize(label_array(label), palette, IGNORE_COLOR)


def overlay(image: Image, label: Tensor | np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> Image:
    """Class colours blended over the image (ignore pixels stay untouched)."""
    return imageio.overlay(image, label_array(label), palette, alpha)


def legend(entries: Sequence[tuple[str, Sequence[int]]], width: int, px: float) -> Image:
    """Colour swatches with names, wrapped into rows `width` pixels wide."""
    swatch, pad = round(px * 1.2), round(px * 0.8)
    row_height = round(px * 2)
    placed = []  # (x, top, name, colour) of each entry
    x, top = pad, pad
    for name, color in entries:
        item = swatch + round(px * 0.4) + text_size(name, px)[0] + 2 * pad
        if x > pad and x + item > width:  # the row is full: start the next one
            x, top = pad, top + row_height
        placed.append((x, top, name, color))
        x += item
    canvas = np.full((top + row_height, width, 3), PAPER, np.uint8)
    for x, top, name, color in placed:
        cv2.rectangle(canvas, (x, top), (x + swatch, top + swatch), tuple(int(c) for c in color), -1)
        cv2.rectangle(canvas, (x, top), (x + swatch, top + swatch), INK, 1)
        put_text(canvas, name, x + swatch + round(px * 0.4), top + round((swatch + px) / 2), px)
    return canvas


def _opencv_lut(code: int) -> np.ndarray:
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], code)[:, 0, ::-1].copy()


def _ramp(*anchors: Color) -> np.ndarray:
    """A 256-entry RGB colour map through evenly spaced anchor colours."""
    positions = np.linspace(0, 255, len(anchors))
    channels = [np.interp(np.arange(256), positions, channel) for channel in zip(*anchors)]
    return np.stack(channels, axis=1).round().astype(np.uint8)


COLORMAPS: dict[str, np.ndarray] = {
    "magma": _opencv_lut(cv2.COLORMAP_MAGMA),
    "turbo": _opencv_lut(cv2.COLORMAP_TURBO),
    "blues": _ramp((247, 251, 255), (107, 174, 214), (8, 48, 107)),
    "coolwarm": _ramp((59, 76, 192), (221, 221, 221), (180, 4, 38)),
}


def apply_colormap(values: np.ndarray, vmin: float, vmax: float, cmap: str) -> Image:
    """Map values (NaN allowed: light grey) linearly from [vmin, vmax] onto a colour map."""
    values = np.asarray(values, np.float64)
    span = vmax - vmin if vmax > vmin else 1.0
    index = np.clip(np.nan_to_num((values - vmin) / span) * 255, 0, 255).round().astype(np.uint8)
    out = COLORMAPS[cmap][index]
    out[np.isnan(values)] = MISSING
    return out


def readable_on(color: Sequence[int]) -> Color:
    """Black or white, whichever reads better on `color`."""
    r, g, b = (int(c) for c in color)
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else PAPER


def colorbar(height: int, vmin: float, vmax: float, cmap: str, px: float) -> Image:
    """A vertical colour bar `height` pixels tall with its extremes and midpoint labelled."""
    bar_width = max(12, round(px * 1.2))
    ramp = apply_colormap(np.linspace(vmax, vmin, height)[:, None].repeat(bar_width, 1), vmin, vmax, cmap)
    labels = [f"{v:.3g}" for v in (vmax, (vmin + vmax) / 2, vmin)]
    label_width = max(text_size(t, px)[0] for t in labels) + round(px * 0.6)
    canvas = np.full((height + round(px * 2), bar_width + label_width, 3), PAPER, np.uint8)
    top = round(px)
    canvas[top : top + height, :bar_width] = ramp
    cv2.rectangle(canvas, (0, top), (bar_width - 1, top + height - 1), INK, 1)
    for text, y in zip(labels, (top, top + height // 2, top + height - 1)):
        put_text(canvas, text, bar_width + round(px * 0.4), y + round(px / 2), px)
    return canvas


def matrix_picture(
    values: np.ndarray,
    *,
    title: str,
    vmin: float,
    vmax: float,
    cmap: str,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    row_title: str = "",
    col_title: str = "",
    annotate: str | None = None,
    separators: Sequence[int] = (),
) -> Image:
    """A heat map of an R×C matrix with a colour bar. Empty labels skip a row/column; `annotate` (a format such as
    "{:.0%}") writes the values in cells big enough for them; `separators` draw lines before those indices."""
    values = np.asarray(values, np.float64)
    rows, cols = values.shape
    n = max(rows, cols)
    dense = row_labels is not None and all(row_labels) and n > 1
    cell = max(1, math.ceil(640 / n), 14 if dense else 1)  # about 640 pixels a side
    height, width = rows * cell, cols * cell
    heat = cv2.resize(apply_colormap(values, vmin, vmax, cmap), (width, height), interpolation=cv2.INTER_NEAREST)

    # Label text: as tall as the spacing between labelled rows allows.
    def spacing(labels: Sequence[str] | None) -> int:
        idx = [i for i, t in enumerate(labels or ()) if t]
        return min((b - a for a, b in zip(idx, idx[1:])), default=n) * cell

    px = float(min(18, max(9, 0.7 * min(spacing(row_labels), spacing(col_labels)))))
    if annotate and cell >= 30:
        value_px = min(px, cell * 0.32)
        for i in range(rows):
            for j in range(cols):
                if not np.isnan(values[i, j]):
                    text = annotate.format(values[i, j])
                    tw, th = text_size(text, value_px)
                    color = readable_on(heat[i * cell + cell // 2, j * cell + cell // 2])
                    put_text(heat, text, j * cell + (cell - tw) // 2, i * cell + (cell + th) // 2, value_px, color)
    for s in separators:
        cv2.line(heat, (s * cell, 0), (s * cell, height - 1), PAPER, max(1, cell // 4))
        cv2.line(heat, (0, s * cell), (width - 1, s * cell), PAPER, max(1, cell // 4))

    pad = round(px * 0.6)

    def label_strip(labels: Sequence[str] | None, length: int, align_right: bool) -> Image:
        """One label per cell down a strip `length` pixels long (none: an empty strip)."""
        if labels is None:
            return np.zeros((length, 0, 3), np.uint8)
        size = max(text_size(t, px)[0] for t in labels) + 2 * pad
        strip = np.full((length, size, 3), PAPER, np.uint8)
        for i, text in enumerate(labels):
            if text:
                tw, th = text_size(text, px)
                put_text(strip, text, size - pad - tw if align_right else pad, i * cell + (cell + th) // 2, px)
        return strip

    left = label_strip(row_labels, height, align_right=True)
    top = np.rot90(label_strip(col_labels, width, align_right=False))  # column labels read upwards

    body = np.full((top.shape[0] + height, left.shape[1] + width, 3), PAPER, np.uint8)
    body[top.shape[0] :, : left.shape[1]] = left
    body[: top.shape[0], left.shape[1] :] = top
    body[top.shape[0] :, left.shape[1] :] = heat
    cv2.rectangle(body, (left.shape[1], top.shape[0]), (body.shape[1] - 1, body.shape[0] - 1), INK, 1)
    axis_px = max(px, 13)
    if col_title:
        caption = np.full((round(axis_px * 2), body.shape[1], 3), PAPER, np.uint8)
        tw, _ = text_size(col_title, axis_px)
        put_text(caption, col_title, left.shape[1] + (width - tw) // 2, round(axis_px * 1.4), axis_px, MUTED)
        body = np.concatenate([caption, body])
    if row_title:
        caption = rotated_text(row_title, axis_px, MUTED)
        column = np.full((body.shape[0], caption.shape[1], 3), PAPER, np.uint8)
        y = body.shape[0] - height + max(0, (height - caption.shape[0]) // 2)
        column[y : y + caption.shape[0]] = caption[: body.shape[0] - y]
        body = np.concatenate([column, body], axis=1)
    bar = colorbar(min(height, 480), vmin, vmax, cmap, max(px, 12))
    # Top of the colour bar level with the top of the heat map.
    offset = max(0, body.shape[0] - height - round(max(px, 12)))
    bar = vstack([np.full((offset, bar.shape[1], 3), PAPER, np.uint8), bar], gap=0)
    body = hstack([body, bar], gap=round(px))
    picture = framed(body)
    return titled(picture, title, font_px(max(picture.shape[1], 720), hi=26))


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file as a uint8 3×H×W RGB tensor."""
    return torch.from_numpy(imageio.read_image(path)).permute(2, 0, 1).contiguous()


def write_png(path: str | os.PathLike, image: Image) -> Path:
    """Write an RGB picture as a PNG atomically."""
    return imageio.write_image(Path(path).with_suffix(".png"), image)
