"""Image and JSON files, colour-coded label maps and atomic writes, shared by data, predict, eval, visualize and training.

Arrays are RGB (H×W×3 uint8) or label maps (H×W); only `read_image` / `write_image` convert from and to the BGR files
opencv reads and writes. Every write goes to a temporary file beside the target and is moved into place with
os.replace, so a reader never sees a half-written file and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segrefine.errors import SegrefineError


class UnreadableInput(SegrefineError):
    """An input image or video that cannot be decoded: a per-input failure, not a reason to stop a whole run."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then move it into place; nothing is left behind on failure."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise SegrefineError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file's content; a missing or invalid file is one line naming it (`what`: e.g. "eval report")."""
    path = Path(path)
    if not path.is_file():
        raise SegrefineError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SegrefineError(f"{path} is not valid JSON: {' '.join(str(e).split())}") from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


@contextlib.contextmanager
def opencv_silent() -> Iterator[None]:
    """Mute OpenCV's own log lines while decoding: a broken input gets our one line instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (any bit depth or channel count is converted); UnreadableInput otherwise."""
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)  # imdecode, unlike imread, takes any path encoding
    except OSError as e:
        raise UnreadableInput(f"cannot read image {path}: {e.strerror or e}") from None
    with opencv_silent():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UnreadableInput(f"cannot read image {path}: not a decodable image (corrupt, empty or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an H×W label map or an H×W×3 RGB image atomically; the format follows the suffix (PNG by default)."""
    path = Path(path)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(pixels))
    if not ok:
        raise SegrefineError(f"cannot encode {path} as {path.suffix or '.png'}")
    return atomic_write(path, lambda tmp: encoded.tofile(os.fspath(tmp)))


def palette_lut(palette: Sequence[Sequence[int]], fill: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """256×3 uint8 lookup table: class id → colour; ids that are no class (e.g. 255) get `fill`."""
    lut = np.empty((256, 3), np.uint8)
    lut[:] = fill
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], fill: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """H×W label map → H×W×3 RGB in the palette; ids that are no class get `fill`."""
    return palette_lut(palette, fill)[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over an RGB image (`alpha` = weight of the colours); no-class pixels stay untouched."""
    label = np.asarray(label)
    if label.shape != image.shape[:2]:
        raise SegrefineError(f"label map {label.shape} and image {image.shape[:2]} differ in size")
    blend = cv2.addWeighted(image, 1.0 - alpha, colorize(label, palette), alpha, 0.0)
    unlabelled = (label < 0) | (label >= len(palette))
    blend[unlabelled] = image[unlabelled]
    return blend
