"""A generated COCO dataset of coloured shapes on cluttered backgrounds, for tests and benches.

No download needed and the boxes are exact, so a training loop that works must learn it fast.
"""

from __future__ import annotations

import colorsys
import functools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")
# One hue family per shape: the task stays easy enough for a few CPU epochs from scratch,
# while clutter of every hue keeps colour alone from solving it.
HUES = {"circle": 0.0, "square": 0.6, "triangle": 0.3}
# COCO categories of the shapes, id i + 1 for SHAPES[i].
CATEGORIES = [
    {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)
]
# What ImageOps.exif_transpose does for an orientation, undone: the stored pixels.
_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class ShapesSpec:
    """How to generate: image count and size, objects per image, seed."""

    images: int = 24
    width: int = 160
    height: int = 120
    min_objects: int = 1
    max_objects: int = 3
    min_side: int = 22
    max_side: int = 44
    negatives: int = 0  # extra images with clutter only
    seed: int = 0
    orientation: int = 1  # EXIF orientation of the stored files; annotations stay upright
    suffix: str = ".jpg"
    folder: str = "shapes"  # image folder under out_dir, part of each file_name


def colour(rng: random.Random, hue: float | None = None) -> tuple[int, int, int]:
    """A saturated, bright RGB colour: any hue, or one near `hue` (0-1)."""
    h = rng.random() if hue is None else (hue + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def background(
    rng: random.Random, width: int, height: int, scale: float = 1.0, density: float = 1.0
) -> Image.Image:
    """A plain ground with lines and specks of every hue.

    `scale` multiplies line widths and speck radii (a photo shrunk `scale` times before the
    model sees it keeps the clutter's look); `density` multiplies their counts.
    """
    base = tuple(rng.randint(60, 160) for _ in range(3))
    image = Image.new("RGB", (width, height), base)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(round(rng.randint(8, 16) * density)):  # thin lines: like twigs and cracks
        pts = [(rng.uniform(0, width), rng.uniform(0, height)) for _ in range(2)]
        draw.line(pts, fill=colour(rng), width=max(1, round(rng.randint(1, 2) * scale)))
    for _ in range(round(rng.randint(10, 25) * density)):  # specks smaller than any object
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1, 4) * scale
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour(rng))
    return image.filter(ImageFilter.GaussianBlur(0.6 * scale))


def overlaps(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]]) -> bool:
    """Whether xywh `box` intersects any of `others`."""
    x, y, w, h = box
    return any(
        x < ox + ow and ox < x + w and y < oy + oh and oy < y + h for ox, oy, ow, oh in others
    )


def _square(rng: random.Random, smallest: int, largest: int) -> tuple[int, int]:
    side = rng.randint(smallest, largest)
    return side, side


def place(
    rng: random.Random,
    width: int,
    height: int,
    size: tuple[int, int] | Callable[[], tuple[int, int]],
    placed: list[tuple[int, int, int, int]],
    attempts: int = 50,
) -> tuple[int, int, int, int] | None:
    """x, y, w, h of a box of `size` (or of `size()`, drawn anew each attempt) at a random
    spot inside the image, off its border, overlapping none of `placed`; None when no
    attempt finds room."""
    for _ in range(attempts):
        w, h = size() if callable(size) else size
        x, y = rng.randint(1, width - w - 1), rng.randint(1, height - h - 1)
        if not overlaps((x, y, w, h), placed):
            return x, y, w, h
    return None


def draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    x: int,
    y: int,
    side: int,
    fill: Any,
    height: int | None = None,
) -> None:
    """Draw `shape` filling exactly the pixels [x, x + side) x [y, y + height or side)."""
    x1, y1 = x + side - 1, y + (side if height is None else height) - 1
    if shape == "circle":
        draw.ellipse([x, y, x1, y1], fill=fill)
    elif shape == "square":
        draw.rectangle([x, y, x1, y1], fill=fill)
    elif shape == "triangle":
        draw.polygon([((x + x1) / 2, y), (x, y1), (x1, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def shape_annotation(
    annotation_id: int, image_id: int, shape: str, box: tuple[int, int, int, int]
) -> dict[str, Any]:
    """The COCO annotation of one drawn shape (box: x, y, width, height)."""
    x, y, w, h = box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": SHAPES.index(shape) + 1,
        "bbox": [x, y, w, h],
        "area": float(w * h),
        "iscrowd": 0,
        "segmentation": [],
    }


def save_with_orientation(image: Image.Image, path: Path, orientation: int = 1) -> None:
    """Store `image` so that a viewer applying EXIF `orientation` shows it as given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"quality": 92} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image = image.transpose(_STORE[orientation])
        kwargs["exif"] = exif
    image.save(path, **kwargs)


def make_shapes_dataset(
    out_dir: Path, spec: ShapesSpec = ShapesSpec(), file_name: str = "annotations.json"
) -> Path:
    """Write images under out_dir/<spec.folder>/ and their COCO file; return the file's path."""
    rng = random.Random(spec.seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(spec.images + spec.negatives):
        # Alternate landscape and portrait so batches need aspect-ratio grouping.
        width, height = (spec.width, spec.height) if index % 2 == 0 else (spec.height, spec.width)
        image = background(rng, width, height)
        draw = ImageDraw.Draw(image)
        placed: list[tuple[int, int, int, int]] = []
        count = 0 if index >= spec.images else rng.randint(spec.min_objects, spec.max_objects)
        largest = min(spec.max_side, width - 2, height - 2)
        for _ in range(count):
            side = functools.partial(_square, rng, spec.min_side, largest)
            box = place(rng, width, height, side, placed)
            if box is None:
                continue
            shape = rng.choice(SHAPES)
            draw_shape(draw, shape, box[0], box[1], box[2], colour(rng, HUES[shape]))
            placed.append(box)
            annotations.append(shape_annotation(len(annotations) + 1, index + 1, shape, box))
        image_name = f"{spec.folder}/{index + 1:05d}{spec.suffix}"
        save_with_orientation(image, out_dir / image_name, spec.orientation)
        images.append({"id": index + 1, "file_name": image_name, "width": width, "height": height})
    path = out_dir / file_name
    path.write_text(
        json.dumps(
            {
                "info": {"description": f"trashmap synthetic shapes, seed {spec.seed}"},
                "images": images,
                "annotations": annotations,
                "categories": CATEGORIES,
            }
        )
    )
    return path
