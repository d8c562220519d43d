"""Generated TACO-like scenes: large cluttered phone photos with litter-sized objects, as COCO.

The shapes of `ml.synthetic` (one hue family per class) on a cluttered ground, in photos of
3000-4000 px stored with EXIF orientations, with box sizes drawn so that, once the photo is
resized to the model's input, they follow TACO's: about a third under 32 px, a sixth under
16 px. Small litter is then as small for the model as in TACO, which is what sliced
inference and training on native-resolution crops are for.

Smaller photos and inputs keep the same picture when their ratio is kept: the sizes are
drawn in input pixels and scaled up by each photo's own shrink factor.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import ImageDraw

from ml.coco_eval import resize_scale
from ml.data.coco_file import write_json
from ml.synthetic import (
    CATEGORIES,
    HUES,
    SHAPES,
    background,
    colour,
    draw_shape,
    place,
    save_with_orientation,
    shape_annotation,
)

# TACO's box sizes at the 800/1333 model input: the 0th, 5th, ..., 100th percentiles of
# sqrt(box area) over the 4784 boxes of the official annotations.json (tests/data/taco),
# each box scaled by its photo's resize factor (a test recomputes the share under 32 px).
TACO_SIDE_PERCENTILES = (2.9, 8.9, 11.4, 13.9, 17.4, 20.7, 25.0, 30.6, 37.0, 45.9, 54.6) + (
    64.7,
    75.4,
    86.9,
    102.7,
    122.9,
    145.6,
    185.5,
    241.7,
    353.6,
    873.6,
)
# ln(width / height) of the same boxes, 0th, 10th, ..., 100th percentile; the two ends
# (3 units: 20:1 slivers) are cut to +-1.4 (4:1), as thin as a cigarette seen from above.
TACO_LOG_ASPECT_PERCENTILES = (-1.4, -0.65, -0.35, -0.17, -0.04, 0.07, 0.19, 0.34, 0.51, 0.77, 1.4)
# Where the size percentiles above were measured.
TACO_INPUT = (800, 1333)
# Clutter of `ml.synthetic.background` per pixel of a 160 x 120 image, kept per input pixel.
_CLUTTER_AREA = 160 * 120


@dataclass(frozen=True)
class SceneSpec:
    """How to generate: photo count and sizes, the model input the sizes refer to, seed.

    `input_size` is the model's (min side, max side); box sides follow TACO's at TACO_INPUT
    in input pixels, capped at `max_fraction` of the input's shorter side.
    """

    images: int = 8
    long_side: tuple[int, int] = (3000, 4000)  # photo long side, drawn uniformly
    aspect: float = 4 / 3  # long side / short side, as most phone cameras
    input_size: tuple[int, int] = TACO_INPUT
    min_objects: int = 3
    max_objects: int = 12
    max_fraction: float = 0.35
    clutter: float = 1.0  # lines and specks per input pixel, relative to ml.synthetic's
    orientations: tuple[int, ...] = (1, 6, 3, 8)  # EXIF orientation of photo i: cycled
    seed: int = 0
    folder: str = "scenes"  # image folder under out_dir, part of each file_name


def _interpolate(percentiles: tuple[float, ...], u: float) -> float:
    """The value at quantile u in [0, 1] of a table of evenly spaced percentiles."""
    position = u * (len(percentiles) - 1)
    low = min(int(position), len(percentiles) - 2)
    return percentiles[low] + (position - low) * (percentiles[low + 1] - percentiles[low])


def taco_box_size(rng: random.Random, cap: float) -> tuple[float, float]:
    """A (width, height) in input pixels with TACO's size and aspect, no side over `cap`."""
    side = _interpolate(TACO_SIDE_PERCENTILES, rng.random())
    ratio = math.exp(_interpolate(TACO_LOG_ASPECT_PERCENTILES, rng.random()))
    width, height = side * math.sqrt(ratio), side / math.sqrt(ratio)
    shrink = min(1.0, cap / max(width, height))  # large boxes shrink, keeping their aspect
    return width * shrink, height * shrink


def input_sides(data: Mapping[str, Any], input_size: tuple[int, int]) -> list[float]:
    """sqrt(box area) of every box of a COCO dict, in pixels of the model input."""
    scale = {
        image["id"]: resize_scale(image["width"], image["height"], *input_size)
        for image in data["images"]
    }
    return [
        math.sqrt(max(0.0, a["bbox"][2] * a["bbox"][3])) * scale[a["image_id"]]
        for a in data["annotations"]
    ]


def small_share(sides: list[float], limit: float = 32.0) -> float:
    """Share of box sides (sqrt area, input pixels) under `limit`: COCO's 'small' at 32."""
    return bisect.bisect_left(sorted(sides), limit) / len(sides) if sides else 0.0


def _scene(
    rng: random.Random, spec: SceneSpec, index: int
) -> tuple[Any, list[tuple[str, tuple[int, int, int, int]]]]:
    long = rng.randint(*spec.long_side)
    short = round(long / spec.aspect)
    width, height = (long, short) if index % 2 == 0 else (short, long)
    scale = resize_scale(width, height, *spec.input_size)  # photo -> model input
    input_area = width * height * scale**2
    image = background(
        rng, width, height, scale=1 / scale, density=spec.clutter * input_area / _CLUTTER_AREA
    )
    draw = ImageDraw.Draw(image)
    placed: list[tuple[int, int, int, int]] = []
    objects = []
    cap = spec.max_fraction * min(spec.input_size[0], width * scale, height * scale)
    sizes = [
        taco_box_size(rng, cap) for _ in range(rng.randint(spec.min_objects, spec.max_objects))
    ]
    # Largest first, each size drawn once: boxes that find no room are then rare, and not
    # mostly large ones, which would skew the sizes towards small.
    for w_in, h_in in sorted(sizes, key=lambda size: size[0] * size[1], reverse=True):
        w, h = max(2, round(w_in / scale)), max(2, round(h_in / scale))
        box = place(rng, width, height, (w, h), placed)
        if box is None:
            continue
        shape = rng.choice(SHAPES)
        draw_shape(draw, shape, box[0], box[1], w, colour(rng, HUES[shape]), height=h)
        placed.append(box)
        objects.append((shape, box))
    return image, objects


def make_scenes(
    out_dir: Path, spec: SceneSpec = SceneSpec(), file_name: str = "scenes.json"
) -> Path:
    """Write photos under out_dir/<spec.folder>/ and their COCO file; return the file's path.

    Annotations are upright (as a viewer applying the EXIF orientation shows the photo);
    the stored pixels are turned by each photo's orientation.
    """
    rng = random.Random(spec.seed)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(spec.images):
        image, objects = _scene(rng, spec, index)
        for shape, box in objects:
            annotations.append(shape_annotation(len(annotations) + 1, index + 1, shape, box))
        name = f"{spec.folder}/{index + 1:05d}.jpg"
        save_with_orientation(
            image, out_dir / name, spec.orientations[index % len(spec.orientations)]
        )
        images.append(
            {"id": index + 1, "file_name": name, "width": image.width, "height": image.height}
        )
    data = {
        "info": {"description": f"trashmap generated TACO-like scenes, seed {spec.seed}"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    return write_json(data, out_dir / file_name)
