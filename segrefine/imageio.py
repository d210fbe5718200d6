"""Image and JSON files, colour-coded label maps and atomic writes, shared by data, predict, eval, visualize and training.

Arrays are RGB (H×W×3 uint8) or label maps (H×W); only `read_image` / `write_image` convert from and to the BGR files
opencv reads and writes. Every write goes to a temporary file beside the target and is moved into place with
os.replace, so a reader never sees a half-written file and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

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
    """Run `write(tmp)` on a temporary file beside `path`, then move it into place with the normal mode for new files
    (0644 under the usual umask), whatever mode `write` created it with; nothing is left behind on failure."""
    path = Path(path)
    # A name of its own, not the target's plus a tag: a target name near the file system's limit must still fit.
    tmp = path.with_name(f".segrefine-{uuid.uuid4().hex[:12]}{suffix}")
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


def _while_any(start: Callable[[], Any], stop: Callable[[Any], None]) -> Callable[[], contextlib.AbstractContextManager]:
    """A context manager that calls `start` when the first of any number of threads enters it and `stop` (given what
    `start` returned) when the last one leaves: threads decoding at once neither undo each other's setting early nor
    restore one another's as the original."""
    lock = threading.Lock()
    inside, token = 0, None  # threads inside; what `start` returned

    @contextlib.contextmanager
    def context() -> Iterator[None]:
        nonlocal inside, token
        with lock:
            if inside == 0:
                token = start()
            inside += 1
        try:
            yield
        finally:
            with lock:
                inside -= 1
                if inside == 0:
                    stop(token)

    return context


def _silence_opencv() -> int:
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return level


# OpenCV's own log lines muted while decoding: a broken input gets our one line instead.
opencv_silent = _while_any(_silence_opencv, cv2.utils.logging.setLogLevel)


OPENCV_MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))  # opencv's own decoding limit
# The default limit on an input's width × height, read from its header before decoding. 100 megapixels is above what
# cameras save (phones 12-50 MP, the largest DSLRs about 60), and such an image already needs 300 MB decoded and many
# GB of activations in the network; past it, a small file can claim billions of pixels and take minutes and all memory.
MAX_PIXELS = 100_000_000


def image_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) that an image file's header claims, read by Pillow without decoding; None where Pillow cannot read the
    header (the decoder then has the last word). Past Pillow's own limit, `PILLOW_MAX_PIXELS`, the size is not read:
    Image.DecompressionBombError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # below our own limit it is only a size
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except (OSError, ValueError, EOFError):  # UnidentifiedImageError is an OSError
        return None
    return height, width


PILLOW_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # over this Image.open raises instead of reading the header


def size_problem(data: bytes, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why an image file's bytes claim too many pixels to decode (over `max_pixels`), from its header alone; None when
    they do not, or when the header does not say."""
    try:
        size = image_size(data)
    except Image.DecompressionBombError:
        if not PILLOW_MAX_PIXELS or max_pixels >= PILLOW_MAX_PIXELS:
            return None  # the user allows more than Pillow reads: opencv's own limit decides
        return f"more than {PILLOW_MAX_PIXELS} pixels, over the limit of {max_pixels} (`max_pixels`)"
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    return f"{size[0]}×{size[1]} (H×W) is {size[0] * size[1]} pixels, over the limit of {max_pixels} (`max_pixels`)"


DECODER_CHATTER = (b"libpng ",)  # lines C decoders print to file descriptor 2 themselves, out of opencv's reach


def _capture_stderr() -> tuple[int, Any] | None:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to mute
        return None
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    return saved, capture


def _release_stderr(token: tuple[int, Any] | None) -> None:
    if token is None:
        return
    saved, capture = token
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()  # this process's own lines written meanwhile, into the capture
    os.dup2(saved, 2)
    os.close(saved)
    capture.seek(0)
    kept = b"".join(line for line in capture if not line.startswith(DECODER_CHATTER))
    capture.close()
    if kept:
        os.write(2, kept)


# While any thread decodes, file descriptor 2 goes to a temporary file (libpng prints "libpng error: …" there itself,
# before we report the file in one line); when the last decode ends, everything else written meanwhile (lines other
# threads printed) goes on to stderr, the decoders' chatter left out.
native_stderr_muted = _while_any(_capture_stderr, _release_stderr)


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
    problem = size_problem(data.tobytes(), max_pixels)
    if problem is not None:
        raise error(f"cannot read {what} {path}: its header claims a size too large to decode: {problem}")
    with opencv_silent(), native_stderr_muted():
        try:
            pixels = cv2.imdecode(data, flags) if data.size else None
        except cv2.error as e:
            why = (
                f"its header claims a size too large to decode (opencv's limit is {OPENCV_MAX_PIXELS} pixels)"
                if "validateInputImageSize" in str(e)
                else "a corrupt or unsupported image (opencv cannot decode it)"
            )
            raise error(f"cannot read {what} {path}: {why}") from None
    if pixels is None:
        raise error(f"cannot read {what} {path}: not a decodable image (corrupt, empty or unsupported format)")
    return pixels


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file as H×W×3 uint8 RGB (any bit depth or channel count is converted); UnreadableInput otherwise,
    also for one whose header claims more than `max_pixels` pixels."""
    return cv2.cvtColor(decode(path, cv2.IMREAD_COLOR, "image", UnreadableInput, max_pixels=max_pixels), cv2.COLOR_BGR2RGB)


def pil_rgb(image: Image.Image) -> np.ndarray:
    """H×W×3 uint8 RGB of a Pillow image of any mode (palette, CMYK, ...); 16-bit gray by its top byte, as `read_image`
    reads a 16-bit file (Pillow's own conversion would clip it at 255)."""
    if image.mode.startswith("I"):
        image = Image.fromarray(np.clip(np.asarray(image) >> 8, 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB"))


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
    depth = _png_grey_depth(path)
    if depth is not None and depth < 8:  # opencv stretched the ids to 0-255 (a 1-bit mask's 1 became 255): undo it
        label = label // (255 // (2**depth - 1))
    return label


def _png_grey_depth(path: str | os.PathLike) -> int | None:
    """The bit depth of a greyscale PNG (from its header), or None for any other file."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or head[25] != 0:
        return None
    return head[24]


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


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], fill: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """H×W label map → H×W×3 RGB in the palette; ids that are no class get `fill`."""
    lut = np.full((256, 3), fill, np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut[np.clip(np.asarray(label), 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over an RGB image (`alpha` = weight of the colours); no-class pixels stay untouched."""
    label = np.asarray(label)
    if label.shape != image.shape[:2]:
        raise SegrefineError(f"label map {label.shape} and image {image.shape[:2]} differ in size")
    blend = cv2.addWeighted(image, 1.0 - alpha, colorize(label, palette), alpha, 0.0)
    unlabelled = (label < 0) | (label >= len(palette))
    blend[unlabelled] = image[unlabelled]
    return blend
