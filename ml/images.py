"""Photos for ml/: decoded and turned upright by trashmap.imaging, checked against annotations."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from trashmap.imaging import IMAGE_SUFFIXES, decode_oriented, oriented_size, register_heif

__all__ = [
    "ImageSizeError",
    "check_size",
    "list_images",
    "open_oriented",
    "oriented_size",
    "register_heif",
]


class ImageSizeError(ValueError):
    """A decoded image is not the size its annotation says."""


def open_oriented(path: Path) -> Image.Image:
    """RGB image as a viewer shows it, at full resolution (a truncated file fails here)."""
    image, _ = decode_oriented(path)
    return image


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
