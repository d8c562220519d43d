"""Decoding photos and turning them upright by their EXIF orientation: the one implementation.

The upload (validation, oriented size), the public image, the detection workers and ml/'s
datasets all decode here with Pillow (+ pillow-heif); no torch, no Flask.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format name -> the content type we store and serve.
SUPPORTED_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # multi-picture JPEGs from many phones decode as plain JPEG
    "PNG": "image/png",
    "HEIF": "image/heic",
    "WEBP": "image/webp",
}
# File suffixes of the formats above, for tools that walk folders of photos.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp")
# EXIF orientations 5-8 turn the stored image by 90 degrees, swapping width and height.
_TRANSPOSED = {5, 6, 7, 8}
DEFAULT_MAX_PIXELS = 120_000_000  # a 108 MP phone sensor fits; a decompression bomb does not


class ImageError(ValueError):
    """Base class: the bytes are not a photo we can use."""

    code = "invalid_image"


class NotAnImage(ImageError):
    code = "not_an_image"


class UnsupportedFormat(ImageError):
    code = "unsupported_format"


class UndecodableImage(ImageError):
    code = "undecodable_image"


class ImageTooLarge(ImageError):
    code = "image_too_large"


@dataclass(frozen=True)
class ImageInfo:
    """What the upload learns by decoding: the size as a viewer shows it (after orientation)."""

    content_type: str
    width: int
    height: int
    orientation: int


@functools.cache
def register_heif() -> None:
    """Let Pillow open HEIC/HEIF (once per process, on first use: importing has no effects)."""
    import pillow_heif

    pillow_heif.register_heif_opener()


def _open(source: bytes | Path, max_pixels: int) -> Image.Image:
    register_heif()
    if isinstance(source, bytes) and not source:
        raise NotAnImage("the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:
        raise NotAnImage("the file is not an image in a known format") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:  # Pillow plugins raise assorted errors on garbage headers
        raise UndecodableImage(f"the image header cannot be read ({exc})") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(
            f"{image.format} is not accepted; send one of JPEG, PNG, HEIC/HEIF or WebP"
        )
    width, height = image.size
    # Checked before decoding a single pixel, so a bomb never allocates its buffer.
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} exceeds the {max_pixels} pixel limit")
    return image


def orientation_of(image: Image.Image) -> int:
    """EXIF orientation (1-8) still to apply; pillow-heif has already applied HEIF's own."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def oriented_size(source: bytes | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as a viewer shows the photo, read from the header only."""
    with _open(source, max_pixels) as image:
        width, height = image.size
        return (height, width) if orientation_of(image) in _TRANSPOSED else (width, height)


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Validate that `data` fully decodes and return its oriented size."""
    image = _open(data, max_pixels)
    width, height = image.size
    orientation = orientation_of(image)
    try:
        # A reduced-scale JPEG decode still reads every entropy-coded byte, so a truncated
        # file fails here, at an eighth of the cost of a full decode.
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:
        raise UndecodableImage(f"the image data cannot be decoded ({exc})") from None
    if orientation in _TRANSPOSED:
        width, height = height, width
    return ImageInfo(SUPPORTED_FORMATS[str(image.format)], width, height, orientation)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit greyscale is scaled down, not clipped to white as convert() would."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image).astype(np.uint32)
        image = Image.fromarray((pixels >> 8).clip(0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_oriented(
    data: bytes | Path,
    target: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[Image.Image, float]:
    """RGB image turned upright, and the factor from its pixels back to full-size pixels.

    With `target` (min side, max side) a JPEG is decoded at the smallest DCT scale that still
    covers the size the detector resizes to, which is several times faster on phone photos.
    """
    image = _open(data, max_pixels)
    width, height = image.size
    full_width = height if orientation_of(image) in _TRANSPOSED else width
    try:
        if target is not None and image.format in ("JPEG", "MPO"):
            scale = min(target[0] / min(width, height), target[1] / max(width, height))
            if scale < 1:
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:
        raise UndecodableImage(f"the image data cannot be decoded ({exc})") from None
    return image, full_width / image.size[0]
