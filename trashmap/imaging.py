"""Decoding photos and turning them upright by their EXIF orientation: the one implementation.

The upload (validation, oriented size), the public image, the detection workers and ml/'s
datasets all decode here with Pillow (+ pillow-heif); no torch, no Flask. The limits that
bound what a decode may cost (pixels, JPEG scans, shape, CPU time) live here too, so the
workers refuse what the upload refuses.
"""

from __future__ import annotations

import functools
import io
import math
import mmap
import re
import time
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
# Upload shape limits: smaller or thinner images are banners, icons or attacks, not litter.
MIN_SIDE = 16
MAX_ASPECT = 50
# A progressive JPEG's decode cost grows with its scan count, even at reduced scale (each
# scan walks every block). Cameras and libjpeg's default script write about 10 scans.
MAX_JPEG_SCANS = 100
# Pixels x scans a decode may cost (the pre-check before any pixel is decoded): a 108 MP
# photo with the usual 10 scans fits, the same photo with 100 repeated scans does not.
MAX_SCAN_PIXELS = 2_000_000_000
# CPU seconds the upload's validating decode may take, measured on the decoding thread
# (the decode runs in C and cannot be interrupted; the pre-check above bounds it first).
DEFAULT_DECODE_CPU_S = 5.0
# Draft decoding (a JPEG decoded at a reduced DCT scale) leaves at least this much of the
# downscale to the model's antialiased resize. The DCT scale filters only like a 2x2 box
# average, so when it does nearly all of the shrinking the model sees sharper pixels than
# evaluation's full decode + resize gives it: on tests/data/photos, with inputs of 320 to
# 1024 px, the PSNR between the two inputs fell to 35.6 dB with no headroom (the draft just
# covering the input) and is at least 47 dB with 1.5x (`tests/worker/test_model_input.py`).
# A 12 MP photo at the default 800 px input is still decoded at half scale either way.
DRAFT_HEADROOM = 1.5
# Segments a JPEG marker walk reads at most: real files have a few dozen.
_MAX_JPEG_SEGMENTS = 4 * MAX_JPEG_SCANS + 1000
# The next marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00 or a restart
# marker (RST0-7); 0xFF 0xFF is fill before a marker, which the walk steps over. A literal
# first byte lets the regex engine skip ahead fast (~1 ms per MB).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = {0x01, *range(0xD0, 0xDA)}


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


class ImageTooSmall(ImageError):
    code = "image_too_small"


class AspectRatio(ImageError):
    code = "aspect_ratio"


class TooManyScans(ImageError):
    code = "too_many_scans"


class DecodeBudget(ImageError):
    code = "decode_budget"


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


def _open(source: bytes | Path, max_pixels: int, untrusted: bool | None = None) -> Image.Image:
    register_heif()
    if (isinstance(source, bytes) and not source) or (
        isinstance(source, Path) and source.stat().st_size == 0
    ):
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
    # Bytes come from uploads and the workers (untrusted), and so does an upload's spool
    # file (`untrusted`); other files on disk are ml/'s datasets, whose headers are read by
    # the thousand and are not walked here.
    if untrusted is None:
        untrusted = isinstance(source, bytes)
    if image.format in ("JPEG", "MPO") and untrusted:
        scans = _scans_of(source)
        if scans > MAX_JPEG_SCANS:
            raise TooManyScans(
                f"the JPEG has more than {MAX_JPEG_SCANS} scans; cameras write about 10"
            )
        if width * height * scans > MAX_SCAN_PIXELS:
            raise DecodeBudget(
                f"{width}x{height} pixels in {scans} progressive scans exceed the decode budget"
                f" of {MAX_SCAN_PIXELS:,} pixel-scans"
            )
    return image


def _scans_of(source: bytes | Path) -> int:
    if isinstance(source, bytes):
        return count_jpeg_scans(source)
    # A file is walked in place through a read-only mapping, never read whole into memory.
    with open(source, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return count_jpeg_scans(view)


def count_jpeg_scans(data: bytes | mmap.mmap) -> int:
    """SOS markers of the first JPEG in `data`, read from segment headers without decoding.

    Walks the marker segments by their lengths and skips each scan's entropy-coded data to
    the next marker; stops after MAX_JPEG_SCANS + 1 scans, so the walk itself is bounded.
    """
    pos, scans, segments, size = 2, 0, 0, len(data)
    while pos + 4 <= size and scans <= MAX_JPEG_SCANS:
        segments += 1
        if segments > _MAX_JPEG_SEGMENTS:
            raise TooManyScans(f"the JPEG has more than {_MAX_JPEG_SEGMENTS} segments")
        if data[pos] != 0xFF:
            break  # not a marker: Pillow reports the damage when it decodes
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in _STANDALONE:
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return scans


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


def inspect_image(
    data: bytes | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cpu_budget_s: float = DEFAULT_DECODE_CPU_S,
) -> ImageInfo:
    """Validate that `data` (bytes, or the path of an upload's spool file) is a usable
    photo that fully decodes; return its oriented size.

    Refused before decoding: too small, too thin, too many pixels or progressive scans.
    Refused after decoding: a decode that took more than `cpu_budget_s` CPU seconds, so
    the workers never spend that much on it again.
    """
    image = _open(data, max_pixels, untrusted=True)
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmall(f"{width}x{height}: the shorter side must be at least {MIN_SIDE} px")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise AspectRatio(f"{width}x{height}: the aspect ratio must not exceed 1:{MAX_ASPECT}")
    orientation = orientation_of(image)
    started = time.thread_time()
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
    spent = time.thread_time() - started
    if spent > cpu_budget_s:
        raise DecodeBudget(f"decoding took {spent:.2f} CPU s, over the {cpu_budget_s:g} s budget")
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
    covers DRAFT_HEADROOM times the size the detector resizes to, several times faster on
    phone photos, and within the PSNR stated there of what a full decode gives the model.
    """
    image = _open(data, max_pixels)
    width, height = image.size
    full_width = height if orientation_of(image) in _TRANSPOSED else width
    try:
        if target is not None and image.format in ("JPEG", "MPO"):
            scale = DRAFT_HEADROOM * min(
                target[0] / min(width, height), target[1] / max(width, height)
            )
            if scale < 1:
                image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except Exception as exc:
        raise UndecodableImage(f"the image data cannot be decoded ({exc})") from None
    return image, full_width / image.size[0]
