"""Procedural street scenes: a labelled dataset that needs no download, for tests, demos and quick benchmarks.

Sky on top, a skyline of buildings and trees, a road in perspective with sidewalks beside it, thin poles with
signs, cars and people whose size follows their depth. Every class has its own colour family and texture and
each image its own illumination, so a small network can learn the classes, while the poles (2-4 px at the
default size), signs and object outlines make boundaries matter. A scene depends only on (seed, split, index).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from segrefine.data.base import Root, Transform, make_sample
from segrefine.data.meta import TOY, DatasetMeta
from segrefine.errors import SegrefineError

SPLITS = ("train", "val", "test")
DEFAULT_SIZE = (128, 256)
DEFAULT_LENGTH = {"train": 2000, "val": 100, "test": 100}
LAYOUT = (
    "nothing to download: street-like scenes (road, sidewalk, building, pole, traffic sign, vegetation, sky, "
    "person, car) generated in memory, deterministic by (seed, split, index); options size=(H, W) "
    "(default 128×256), length (default 2000 train, 100 val, 100 test) and seed (default 0); no data root"
)

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = range(len(TOY.classes))  # TOY.classes order

# Appearance (RGB) of each class, far apart in hue or brightness so that no two classes overlap even under
# the per-instance jitter and the per-image illumination below.
BASE = np.array(
    [
        (92, 92, 98),  # road: mid grey
        (196, 160, 182),  # sidewalk: light pink-grey
        (158, 110, 74),  # building: brown
        (42, 42, 42),  # pole: near black
        (232, 200, 30),  # traffic sign: yellow
        (58, 134, 44),  # vegetation: green
        (132, 182, 232),  # sky: light blue
        (186, 34, 56),  # person: red clothing
        (36, 58, 172),  # car: blue paint
    ],
    np.float32,
)
FINE_NOISE = np.array([9, 6, 6, 3, 4, 12, 2, 6, 5], np.float32)  # per-pixel luminance noise (std)
COARSE_NOISE = np.array([10, 8, 12, 0, 0, 30, 6, 0, 6], np.float32)  # blotchy luminance variation (std)
WINDOW = (96, 70, 52)  # building windows: dark brown
TILE_LINE = (170, 136, 156)  # sidewalk joints
HEAD, LEGS = (205, 80, 80), (110, 22, 44)  # person parts, still red
CAR_GLASS = (40, 50, 110)  # car windows: dark blue


class _Canvas:
    """A label map and an RGB float image painted by the same opencv calls."""

    def __init__(self, height: int, width: int) -> None:
        self.label = np.full((height, width), SKY, np.uint8)
        self.image = np.empty((height, width, 3), np.float32)

    def paint(self, draw: Callable[..., Any], *geometry: Any, cls: int, color: Any, **options: Any) -> None:
        draw(self.label, *geometry, color=int(cls), **options)
        draw(self.image, *geometry, color=tuple(float(c) for c in color), **options)

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int, color: Any) -> None:
        self.paint(cv2.rectangle, (int(x0), int(y0)), (int(x1), int(y1)), cls=cls, color=color, thickness=-1)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, cls: int, color: Any, half: bool = False) -> None:
        """A filled ellipse, or only its upper half."""
        centre, axes = (int(cx), int(cy)), (int(ax), int(ay))
        self.paint(cv2.ellipse, centre, axes, 0, 180 if half else 0, 360, cls=cls, color=color, thickness=-1)

    def circle(self, cx: float, cy: float, radius: float, cls: int, color: Any) -> None:
        self.paint(cv2.circle, (int(cx), int(cy)), int(round(radius)), cls=cls, color=color, thickness=-1)

    def line(self, p0: tuple[float, float], p1: tuple[float, float], thickness: int, cls: int, color: Any) -> None:
        self.paint(cv2.line, tuple(map(int, p0)), tuple(map(int, p1)), cls=cls, color=color, thickness=int(thickness))

    def poly(self, cls: int, color: Any, *xy: tuple[float, float]) -> None:
        self.paint(cv2.fillPoly, _polygon(xy), cls=cls, color=color)

    def detail(self, color: Any, *xy: tuple[float, float]) -> None:
        """A polygon on the image only: texture inside a region that keeps its class."""
        cv2.fillPoly(self.image, _polygon(xy), tuple(float(c) for c in color))


def _polygon(xy: Any) -> list[np.ndarray]:
    return [np.round(np.asarray(xy, np.float64)).astype(np.int32)]


def _color(rng: np.random.Generator, cls: int, spread: float = 12.0) -> np.ndarray:
    return BASE[cls] * rng.uniform(0.92, 1.08) + rng.uniform(-spread, spread, 3)


def _shade(rng: np.random.Generator, color: tuple[int, int, int], spread: float) -> np.ndarray:
    return np.asarray(color, np.float32) + rng.uniform(-spread, spread, 3)


def _building(c: _Canvas, rng: np.random.Generator, x0: float, x1: float, top: float, base: float) -> None:
    c.rect(x0, top, x1, base, BUILDING, _color(rng, BUILDING))
    h, w = c.label.shape
    step_x, step_y = rng.uniform(0.025, 0.05) * w, rng.uniform(0.05, 0.1) * h
    win_w, win_h = step_x * rng.uniform(0.35, 0.6), step_y * rng.uniform(0.35, 0.6)
    window = tuple(map(float, _shade(rng, WINDOW, 8)))
    for y in np.arange(top + step_y * 0.5, base - step_y, step_y):
        for x in np.arange(x0 + step_x * 0.4, x1 - win_w, step_x):
            cv2.rectangle(c.image, (int(x), int(y)), (int(x + win_w), int(y + win_h)), window, -1)


def _tree(c: _Canvas, rng: np.random.Generator, cx: float, horizon: float) -> None:
    h, w = c.label.shape
    ax, ay = rng.uniform(0.04, 0.11) * w, rng.uniform(0.06, 0.16) * h
    cy = horizon - ay * rng.uniform(0.6, 1.6)
    color = _color(rng, VEGETATION)
    c.ellipse(cx, cy, ax, ay, VEGETATION, color)
    # foliage down to the ground below the crown
    c.ellipse(cx, horizon, ax * 1.1, ay * 0.5, VEGETATION, color, half=True)
    c.rect(cx - ax * 0.6, cy, cx + ax * 0.6, horizon + 1, VEGETATION, color)


def _car(c: _Canvas, rng: np.random.Generator, cx: float, bottom: float, width: float) -> None:
    height = width * rng.uniform(0.42, 0.55)
    left, right, cut = cx - width / 2, cx + width / 2, width * 0.06
    waist, roof = bottom - height * 0.55, bottom - height
    paint = _color(rng, CAR)
    c.poly(CAR, paint, (left, bottom - cut), (left, waist + cut), (left + cut, waist), (right - cut, waist),
           (right, waist + cut), (right, bottom - cut), (right - cut, bottom), (left + cut, bottom))  # fmt: skip
    mid = cx + rng.uniform(-0.08, 0.08) * width
    low, high = width * 0.4, width * 0.28  # half widths of the cabin at the waist and at the roof
    c.poly(CAR, paint, (mid - low, waist + 1), (mid - high, roof), (mid + high, roof), (mid + low, waist + 1))
    inset = max(1.0, height * 0.08)
    c.detail(_shade(rng, CAR_GLASS, 8), (mid - low + 2 * inset, waist - inset / 2), (mid - high + inset, roof + inset),
             (mid + high - inset, roof + inset), (mid + low - 2 * inset, waist - inset / 2))  # fmt: skip


def _person(c: _Canvas, rng: np.random.Generator, cx: float, bottom: float, height: float) -> None:
    top, hip = bottom - height, bottom - height * 0.45
    head = max(1.5, height * 0.08)
    legs, spread = _shade(rng, LEGS, 10), rng.uniform(0.0, 0.12) * height
    for side in (-1, 1):
        foot = (cx + side * spread, bottom)
        c.line((cx + side * height * 0.05, hip), foot, max(2, round(height * 0.08)), PERSON, legs)
    shirt = _color(rng, PERSON, spread=16)
    shoulder, torso = top + 2 * head, height * 0.13
    waist = torso * 0.8
    c.poly(PERSON, shirt, (cx - torso, shoulder), (cx + torso, shoulder), (cx + waist, hip), (cx - waist, hip))
    arm = max(1, round(height * 0.055))
    for side in (-1, 1):
        hand = (cx + side * (torso + rng.uniform(0.0, 0.1) * height), hip + rng.uniform(-0.05, 0.05) * height)
        c.line((cx + side * torso, shoulder + arm), hand, arm, PERSON, shirt)
    c.circle(cx, top + head, head, PERSON, _shade(rng, HEAD, 10))


def _pole(c: _Canvas, rng: np.random.Generator, x: float, bottom: float, depth: float, sign: bool) -> None:
    h, w = c.label.shape
    scale = max(1.0, w / DEFAULT_SIZE[1])
    thick = int(round(np.clip(2 + 2 * depth + rng.uniform(-0.6, 0.6), 2, 4) * scale))
    top = max(0.03 * h, bottom - depth * rng.uniform(0.9, 1.3) * h)
    x0 = int(x) - thick // 2
    color = _color(rng, POLE, spread=6)
    c.rect(x0, top, x0 + thick - 1, bottom, POLE, color)
    side = rng.choice((-1, 1))
    if rng.random() < 0.3:  # street-light arm: a thin horizontal pole part
        c.rect(x, top, x + side * rng.uniform(0.04, 0.1) * w, int(top) + max(2, thick - 1) - 1, POLE, color)
    if not sign:
        return
    size = max(6.0 * scale, depth * rng.uniform(0.09, 0.15) * h)
    cy = top + size * rng.uniform(0.5, 1.2)
    cx = x + side * rng.choice((0.0, size * 0.5 + thick / 2))
    yellow = _color(rng, SIGN, spread=14)
    shape = rng.integers(3)
    if shape == 0:
        half_w = size * rng.uniform(0.4, 0.8)
        c.rect(cx - half_w, cy - size / 2, cx + half_w, cy + size / 2, SIGN, yellow)
    elif shape == 1:
        c.circle(cx, cy, size / 2, SIGN, yellow)
    else:
        base = cy + size * 0.45
        c.poly(SIGN, yellow, (cx - size * 0.6, base), (cx + size * 0.6, base), (cx, cy - size * 0.6))


def render(
    rng: np.random.Generator, height: int = DEFAULT_SIZE[0], width: int = DEFAULT_SIZE[1]
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: an H×W×3 uint8 RGB image and its H×W uint8 label map (toy train ids)."""
    h, w = height, width
    c = _Canvas(h, w)
    horizon = h * rng.uniform(0.38, 0.52)

    glow = 1.0 + np.linspace(-0.1, 0.12, h)[:, None] * rng.uniform(0.5, 1.5)  # brighter towards the horizon
    c.image[:] = cv2.resize((glow * _color(rng, SKY, spread=8)).astype(np.float32)[:, None], (w, h))

    x = -rng.uniform(0.0, 0.1) * w
    while x < w:
        width_ = rng.uniform(0.1, 0.3) * w
        if rng.random() < 0.8:
            _building(c, rng, x, x + width_, rng.uniform(0.05 * h, horizon - 0.1 * h), horizon + 2)
        x += width_ + rng.uniform(0.0, 0.04) * w
    for _ in range(rng.integers(1, 4)):
        _tree(c, rng, rng.uniform(0, w), horizon)

    # ground: sidewalk with perspective joints, then the road converging to a vanishing point
    c.rect(0, horizon, w - 1, h - 1, SIDEWALK, _color(rng, SIDEWALK))
    line = np.asarray(TILE_LINE, np.float32) + rng.uniform(-6, 6, 3)
    for k in np.linspace(0.05, 1.0, 9) ** 2:
        y = int(horizon + k * (h - horizon))
        cv2.line(c.image, (0, y), (w - 1, y), tuple(map(float, line)), 1)
    vanish, top_half = rng.uniform(0.35, 0.65) * w, rng.uniform(0.01, 0.04) * w
    base_x, base_half = vanish + rng.uniform(-0.2, 0.2) * w, rng.uniform(0.35, 0.6) * w
    c.poly(ROAD, _color(rng, ROAD), (vanish - top_half, horizon), (vanish + top_half, horizon),
           (base_x + base_half, h), (base_x - base_half, h))

    def road_edges(y: float) -> tuple[float, float]:
        t = (y - horizon) / (h - horizon)
        mid, half = vanish + t * (base_x - vanish), top_half + t * (base_half - top_half)
        return mid - half, mid + half

    def beside_road(y: float, margin: float) -> float:
        left, right = road_edges(y)
        side = rng.choice((-1, 1)) if 0 < left and right < w else (-1 if left > w - right else 1)
        return left - margin if side < 0 else right + margin

    # things, far to near so that nearer ones cover farther ones
    things: list[tuple[float, Callable[[], None]]] = []
    for _ in range(rng.integers(1, 4)):
        depth = rng.uniform(0.15, 1.05)
        y = horizon + depth * (h - horizon)
        width_ = depth * rng.uniform(0.3, 0.42) * w
        left, right = road_edges(y)
        cx = rng.uniform(left + width_ / 2, right - width_ / 2) if right - left > width_ else (left + right) / 2
        things.append((y, lambda cx=cx, y=y, wd=width_: _car(c, rng, cx, y, wd)))
    for _ in range(rng.integers(1, 5)):
        depth = rng.uniform(0.12, 1.0)
        y = horizon + depth * (h - horizon)
        tall = max(10.0, depth * rng.uniform(0.45, 0.65) * h)
        cx = rng.uniform(0, w) if rng.random() < 0.2 else beside_road(y, rng.uniform(0.02, 0.12) * w)
        things.append((y, lambda cx=np.clip(cx, 0.03 * w, 0.97 * w), y=y, t=tall: _person(c, rng, cx, y, t)))
    poles = rng.integers(2, 5)
    with_sign = rng.random(poles) < 0.7
    with_sign[rng.integers(poles)] = True
    for signed in with_sign:
        depth = rng.uniform(0.15, 1.0)
        y = horizon + depth * (h - horizon)
        cx = np.clip(beside_road(y, rng.uniform(0.01, 0.08) * w), 0.02 * w, 0.98 * w)
        things.append((y, lambda cx=cx, y=y, d=depth, s=signed: _pole(c, rng, cx, y, d, s)))
    for _, draw in sorted(things, key=lambda item: item[0]):
        draw()

    # per-class texture, then one illumination, optics blur and sensor noise for the whole image (opencv
    # arithmetic: several times faster than numpy broadcasting at these sizes)
    label = c.label
    fine = rng.random((h, w), dtype=np.float32)  # uniform: three times cheaper than normal samples here
    fine -= 0.5
    fine *= np.float32(12**0.5)  # unit variance
    coarse = cv2.resize(rng.standard_normal((h // 8 + 2, w // 8 + 2), dtype=np.float32), (w, h))
    texture = cv2.add(cv2.multiply(COARSE_NOISE[label], coarse), cv2.multiply(FINE_NOISE[label], fine))
    image = cv2.add(c.image, cv2.merge([texture] * 3))
    light = rng.uniform(0.75, 1.2) * rng.uniform(0.94, 1.06, 3)
    ramp = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1.0, 1.0, w)
    image = cv2.multiply(image, cv2.resize((ramp[:, None] * light).astype(np.float32)[None], (w, h)))
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    grain = np.float32(rng.uniform(1.0, 3.0))
    sensor = cv2.merge([np.roll(fine, shift, axis=(0, 1)) * grain for shift in ((5, 11), (-7, 3), (13, -17))])
    image = cv2.add(image, sensor)
    return np.clip(image, 0, 255, out=image).astype(np.uint8), label


@dataclass(eq=False, repr=False)  # a dataset compares and prints as an object
class ToyScenes(Dataset):
    """`length` procedural scenes of one split; item i is the same for the same (seed, split, i)."""

    split: str
    transform: Transform | None
    size: tuple[int, int]
    length: int
    seed: int
    meta = TOY

    def __len__(self) -> int:
        return self.length

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(f"toy {self.split} has {self.length} scenes; index {index} is out of range")
        rng = np.random.default_rng([self.seed, zlib.crc32(self.split.encode()), index])
        return render(rng, *self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.load(index)
        name = f"toy_{self.split}_{index:06d}"
        return make_sample(image, label, name, f"toy://{self.split}/{index}", self.transform)


def meta(root: Root = None) -> DatasetMeta:
    return TOY


def build(
    root: Root,
    split: str,
    transform: Transform | None = None,
    *,
    size: int | tuple[int, int] = DEFAULT_SIZE,
    length: int | None = None,
    seed: int = 0,
) -> ToyScenes:
    """The data root is not used: scenes are drawn in memory."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v >= 32 for v in hw):
        raise SegrefineError(f"toy size {size!r} must be H×W integers of at least 32, e.g. 128x256")
    if length is not None and (not isinstance(length, int) or length < 1):
        raise SegrefineError(f"toy length {length!r} must be a whole number of at least 1")
    if not isinstance(seed, int) or seed < 0:
        raise SegrefineError(f"toy seed {seed!r} must be a whole number of at least 0")
    return ToyScenes(split, transform, hw, DEFAULT_LENGTH.get(split, 100) if length is None else length, seed)
