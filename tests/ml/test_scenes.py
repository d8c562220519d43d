"""Generated TACO-like scenes: TACO's box sizes at the model input, and EXIF orientations."""

from __future__ import annotations

import colorsys
import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data.coco_file import read_coco
from ml.images import open_oriented
from ml.scenes import (
    TACO_INPUT,
    TACO_SIDE_PERCENTILES,
    SceneSpec,
    input_sides,
    make_scenes,
    small_share,
    taco_box_size,
)
from ml.synthetic import HUES, SHAPES

# The bench's scale: photos and input 5x smaller than production, the same ratio.
SMALL_SCENES = SceneSpec(long_side=(600, 800), input_size=(160, 267))


@pytest.fixture(scope="module")
def taco_sides(taco_annotations: Path) -> list[float]:
    return input_sides(read_coco(taco_annotations), TACO_INPUT)


def test_the_size_table_is_taco_s(taco_sides: list[float]) -> None:
    measured = np.percentile(taco_sides, np.linspace(0, 100, len(TACO_SIDE_PERCENTILES)))
    assert measured == pytest.approx(TACO_SIDE_PERCENTILES, abs=0.1)


def test_drawn_sizes_have_taco_s_share_of_small_boxes(taco_sides: list[float]) -> None:
    rng = random.Random(0)
    drawn = [(w * h) ** 0.5 for w, h in (taco_box_size(rng, 280.0) for _ in range(4000))]
    for limit in (16.0, 32.0):
        assert small_share(drawn, limit) == pytest.approx(small_share(taco_sides, limit), abs=0.03)
    assert max(max(taco_box_size(rng, 50.0)) for _ in range(500)) == pytest.approx(50.0)


def test_scenes_keep_taco_s_small_share_after_the_resize(
    tmp_path: Path, taco_sides: list[float]
) -> None:
    spec = dataclasses.replace(SMALL_SCENES, images=16, seed=3)
    data = read_coco(make_scenes(tmp_path, spec))
    sides = input_sides(data, spec.input_size)
    assert len(sides) >= 16 * spec.min_objects
    assert small_share(sides) == pytest.approx(small_share(taco_sides), abs=0.1)
    assert min(sides) < 16 and max(sides) > 40  # litter of every size, not one bucket


def _hue_at(image: Image.Image, x: float, y: float) -> float:
    r, g, b = image.getpixel((int(x), int(y)))  # type: ignore[misc]
    return colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)[0]


def test_photos_are_stored_rotated_and_come_back_upright(tmp_path: Path) -> None:
    spec = SceneSpec(images=4, seed=1, min_objects=6, orientations=(1, 6, 3, 8))
    data = read_coco(make_scenes(tmp_path, spec))
    seen = set()
    for record in data["images"]:
        path = tmp_path / record["file_name"]
        stored = Image.open(path)
        orientation = stored.getexif().get(0x0112, 1)
        seen.add(orientation)
        upright = open_oriented(path)
        assert upright.size == (record["width"], record["height"])
        assert 3000 <= max(upright.size) <= 4000
        if orientation in (6, 8):  # the stored pixels are the other way round
            assert stored.size == (record["height"], record["width"])
        boxes = [a for a in data["annotations"] if a["image_id"] == record["id"]]
        checked = 0
        for ann in boxes:
            x, y, w, h = ann["bbox"]
            if min(w, h) < 24:
                continue
            hue = HUES[SHAPES[ann["category_id"] - 1]]
            found = _hue_at(upright, x + w / 2, y + h * 0.6)  # inside every shape
            assert min(abs(found - hue), 1 - abs(found - hue)) < 0.08, (record, ann)
            checked += 1
        assert checked > 0
    assert seen == {1, 3, 6, 8}
