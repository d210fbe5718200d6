"""Image and JSON files, colour-coded label maps and atomic writes, shared by data, predict, eval, visualize and training.

Arrays are RGB (H×W×3 uint8) or label maps (H×W); only `read_image` / `write_image` convert from and to the BGR files
opencv reads and writes. Every write goes to a temporary file beside the target and is moved into place with
os.replace, so a reader never sees a half-written file and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segrefine.errors import SegrefineError, SettingError, one_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class UnreadableInput(SegrefineError):
    """An input image or video that cannot be decoded, or whose size the model cannot take: a per-input failure, not a
    reason to stop a whole run."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# The mode a plain open() gives new files. Some writers (safetensors) create theirs private (0600) instead.
FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], suffix: str = ".tmp") -> Path:
    """Run `write(tmp)` on a temporary file beside `path`, then move it into place; nothing is left behind on failure.

    The file gets the normal mode for new files (0644 under the usual umask) whatever `write` created it with.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        raise SegrefineError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):  # e.g. the parent is a file: there is no tmp to remove
            tmp.unlink(missing_ok=True)
    return path


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files could not be written into `folder` (created when missing), as a phrase that starts with its path,
    or None; creates nothing."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{folder} is a file, not a folder" if existing == folder else f"{folder}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{folder}: no permission to write in {'it' if existing == folder else existing}"
    return None


def writable_folder(folder: str | os.PathLike) -> str | None:
    """Why no file can be written in `folder`, as a phrase that starts with its path, or None. Unlike
    `folder_problem` it tries (creating the folder and a file, then removing what it made), so it also catches what
    os.access cannot tell, e.g. as root in /proc."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    probe = folder / f".write-check-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as e:
        return f"{os.fspath(folder)} cannot be written: {e.strerror or e}"
    finally:
        for path in missing:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
    return None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON file's content; a missing or invalid file is one line naming it (`what`: e.g. "eval report")."""
    path = Path(path)
    if not path.is_file():
        raise SegrefineError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SegrefineError(f"{path} is not valid JSON: {one_line(e)}") from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (no NaN), indented, written atomically."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def opencv_silent() -> Iterator[None]:
    """Mute OpenCV's own log lines while decoding: a broken input gets our one line instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


OPENCV_MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))  # opencv's own decoding limit
# The default limit on an input's width × height, read from its header before decoding. 100 megapixels is above what
# cameras save (phones 12-50 MP, the largest DSLRs about 60), and such an image already needs 300 MB decoded and many
# GB of activations in the network; past it, a small file can claim billions of pixels and take minutes and all memory.
MAX_PIXELS = 100_000_000


def decode_failure(error: cv2.error) -> str:
    """Why opencv raised instead of returning None while decoding a file, in a few words."""
    if "validateInputImageSize" in str(error):
        return f"its header claims a size too large to decode (opencv's limit is {OPENCV_MAX_PIXELS} pixels)"
    return "a corrupt or unsupported image (opencv cannot decode it)"


def image_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) from the header of a PNG, JPEG, BMP, WebP or TIFF file's bytes, without decoding; None for other formats
    or a header that does not parse (opencv's decoder then has the last word)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return height, width
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM":
            core = struct.unpack("<I", data[14:18])[0] == 12  # the old OS/2 header has 16-bit sizes
            width, height = struct.unpack("<HH", data[18:22]) if core else struct.unpack("<ii", data[18:26])
            return abs(height), abs(width)  # a negative height is a top-down bitmap
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_size(data)
    except (struct.error, IndexError, KeyError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment, found by walking the segments that precede it."""
    i = 2
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xC4, 0xC8, 0xCC) or not 0xC0 <= marker <= 0xCF:  # not a start of frame: skip the segment
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
            continue
        height, width = struct.unpack(">HH", data[i + 5 : i + 9])
        return height, width
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    if kind == b"VP8L":  # lossless: 14-bit sizes minus one, packed after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: 24-bit canvas sizes minus one
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageLength × ImageWidth of the first directory (SHORT or LONG values)."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    size = {}
    for entry in range(offset + 2, offset + 2 + 12 * count, 12):
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), data[entry + 8 : entry + (10 if kind == 3 else 12)])[0]
    return size[257], size[256]


@contextlib.contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Send what C code writes to file descriptor 2 to /dev/null: libpng prints "libpng error: …" there itself,
    out of reach of opencv's log level, before we report the file in one line."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to mute
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def decode(
    path: str | os.PathLike, flags: int, what: str, error: type[SegrefineError] = SegrefineError, *,
    max_pixels: int = MAX_PIXELS,
) -> np.ndarray:  # fmt: skip
    """Decode an image file with opencv (`flags`: cv2.IMREAD_*); a missing, unreadable or undecodable file, or one
    whose header claims more than `max_pixels` pixels, raises `error` as one line "cannot read WHAT PATH: why"."""
    if os.path.exists(path) and not os.path.isfile(path):  # reading a device or a pipe could block or never end
        raise error(f"cannot read {what} {path}: not a regular file")
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)  # imdecode, unlike imread, takes any path encoding
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    size = image_size(data.tobytes())
    if size is not None and size[0] * size[1] > max_pixels:
        raise error(
            f"cannot read {what} {path}: its header claims a size too large to decode: {size[0]}×{size[1]} (H×W) is "
            f"{size[0] * size[1]} pixels, over the limit of {max_pixels} (`max_pixels`)"
        )
    with opencv_silent(), native_stderr_muted():
        try:
            pixels = cv2.imdecode(data, flags) if data.size else None
        except cv2.error as e:
            raise error(f"cannot read {what} {path}: {decode_failure(e)}") from None
    if pixels is None:
        raise error(f"cannot read {what} {path}: not a decodable image (corrupt, empty or unsupported format)")
    return pixels


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (any bit depth or channel count is converted); UnreadableInput otherwise,
    also for one whose header claims more than `max_pixels` pixels."""
    return cv2.cvtColor(decode(path, cv2.IMREAD_COLOR, "image", UnreadableInput, max_pixels=max_pixels), cv2.COLOR_BGR2RGB)


def read_label_map(path: str | os.PathLike, what: str = "label file", *, grey_rgb: bool = True) -> np.ndarray:
    """An H×W map of class ids as stored (uint8 or uint16); a grey map saved as RGB is accepted if `grey_rgb`."""
    label = decode(path, cv2.IMREAD_UNCHANGED, what)
    if label.ndim == 3 and not grey_rgb:
        raise SegrefineError(f"{what} {path} has {label.shape[2]} channels; it must be a single-channel PNG of class ids")
    if label.ndim == 3:
        # A grey map saved as RGB is fine; a colour-coded or palette map is not a map of class ids.
        if not all(np.array_equal(label[..., 0], label[..., c]) for c in range(1, label.shape[2])):
            raise SegrefineError(
                f"{what} {path} has {label.shape[2]} different channels; it must be a single-channel PNG of class "
                "ids (colour or palette PNGs are not supported)"
            )
        label = label[..., 0]
    if label.dtype not in (np.uint8, np.uint16):
        raise SegrefineError(f"{what} {path} has {label.dtype} pixels; it must be an 8- or 16-bit PNG")
    return label


def check_alpha(alpha: float) -> None:
    """Overlay weights are fractions."""
    if not 0.0 <= alpha <= 1.0:
        raise SettingError(f"`alpha` must be between 0 and 1, got {alpha}")


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
