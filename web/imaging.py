"""Decode and orient photo bytes with Pillow (+ pillow-heif); no torch here."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

pillow_heif.register_heif_opener()

# Pillow format name -> the content type we store and serve.
SUPPORTED_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # multi-picture JPEGs from many phones decode as plain JPEG
    "PNG": "image/png",
    "HEIF": "image/heic",
    "WEBP": "image/webp",
}
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


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise NotAnImage("the file is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
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
    return ImageInfo(SUPPORTED_FORMATS[image.format], width, height, orientation)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit greyscale is scaled down, not clipped to white as convert() would."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image).astype(np.uint32)
        image = Image.fromarray((pixels >> 8).clip(0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_oriented(
    data: bytes,
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
