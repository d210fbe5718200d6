"""Uploaded images: the size from the header before any pixel is decoded, then a strict decode to RGB."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segrefine.errors import worded
from segrefine.imageio import PILLOW_MAX_PIXELS, pil_rgb, size_problem

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class BadUpload(ValueError):
    """An upload the service refuses: `status` is the HTTP status to answer, the message its one-line reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """H×W×3 uint8 RGB of a JPEG, PNG or WebP file's bytes; BadUpload for anything else.

    The size is read from the header alone, so a small file claiming a huge size is refused before decoding; Pillow
    raises on truncated data where OpenCV returns a half-grey picture; EXIF orientation is applied."""
    if not data:
        raise BadUpload("the request has no image: the body is empty")
    problem = size_problem(data, max_pixels)
    if problem is not None:
        raise BadUpload("the image's header claims " + worded(problem, lambda name: "the service's max_pixels"), 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size was checked against ours
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # only where the service's max_pixels is above what Pillow decodes
        raise BadUpload(f"the image's header claims more than {PILLOW_MAX_PIXELS} pixels, more than can be decoded", 413) from None
    except (UnidentifiedImageError, OSError):
        raise BadUpload("the body is not a JPEG, PNG or WebP image", 415) from None
    if image.format not in FORMATS:
        raise BadUpload(f"{image.format} images are not accepted: send JPEG, PNG or WebP", 415)
    width, height = image.size
    if width < 1 or height < 1:
        raise BadUpload(f"the image is {width}×{height}: it has no pixels")
    try:
        rgb = pil_rgb(ImageOps.exif_transpose(image))  # upright, as browsers and viewers show it
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadUpload(f"the {image.format} image cannot be decoded ({str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    return rgb.copy()
