"""Reading photos for ml/: decode JPEG, PNG or HEIC and turn them upright by their EXIF tag."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp")


class ImageSizeError(ValueError):
    """A decoded image is not the size its annotation says."""


@functools.cache
def register_heif() -> None:
    """Let Pillow open HEIC/HEIF (once per process)."""
    # Registering is process-wide; doing it on first use keeps imports free of side effects.
    import pillow_heif

    pillow_heif.register_heif_opener()


def open_oriented(path: Path, *, load: bool = True) -> Image.Image:
    """RGB image as a viewer shows it: EXIF orientation applied (pillow-heif applies HEIF's)."""
    register_heif()
    with Image.open(path) as raw:
        if load:
            raw.load()  # a truncated file fails here, not later inside a worker
        image = ImageOps.exif_transpose(raw)
        # exif_transpose already returned a copy, detached from the closed file.
        return image.convert("RGB") if image.mode != "RGB" else image


def oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only."""
    register_heif()
    with Image.open(path) as raw:
        width, height = raw.size
        orientation = raw.getexif().get(0x0112, 1)
    # Orientations 5-8 turn the stored pixels by 90 degrees.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_size(image: Image.Image, width: int, height: int, path: Path | str) -> None:
    """Raise ImageSizeError unless the upright image is width x height."""
    if image.size != (width, height):
        hint = (
            " (the annotation matches the stored pixels before EXIF rotation)"
            if image.size == (height, width)
            else ""
        )
        raise ImageSizeError(
            f"{path}: image is {image.size[0]}x{image.size[1]} after EXIF orientation but the "
            f"annotation says {width}x{height}{hint}"
        )


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted, by suffix."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
