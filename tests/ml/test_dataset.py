"""The dataset returns every annotation, upright images, and handles TACO's defects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ml.categories import ClassSet, load_class_set
from ml.coco_eval import coco_metrics
from ml.data import TacoDataset
from ml.data.coco_file import read_coco
from ml.images import ImageSizeError
from ml.synthetic import save_with_orientation


def _bright_box(image: torch.Tensor, channel: int | None = None) -> list[float]:
    """xyxy extent of the pixels brighter than mid-grey (in one channel, or all)."""
    pixels = image.float() / (255.0 if image.dtype == torch.uint8 else 1.0)
    mask = (pixels[channel] if channel is not None else pixels.min(dim=0).values) > 0.5
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def _coco(images: list[dict], annotations: list[dict], names: list[str]) -> dict:
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(names)],
    }


def test_every_annotation_of_a_multi_object_image_reaches_the_target(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 150))
    draw = ImageDraw.Draw(image)
    boxes = [
        (5, 5, 30, 40),
        (50, 10, 20, 20),
        (90, 60, 45, 30),
        (150, 100, 40, 45),
        (10, 100, 30, 30),
    ]
    for x, y, w, h in boxes:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=(255, 255, 255))
    image.save(tmp_path / "multi.png")
    data = _coco(
        [{"id": 1, "file_name": "multi.png", "width": 200, "height": 150}],
        [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": i % 3 + 1,
                "bbox": list(b),
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, b in enumerate(boxes)
        ],
        ["a", "b", "c"],
    )
    dataset = TacoDataset(data, tmp_path, load_class_set("all", data["categories"]))
    pixels, target = dataset[0]
    assert target["labels"].tolist() == [1, 2, 3, 1, 2]
    assert target["boxes"].tolist() == [[x, y, x + w, y + h] for x, y, w, h in boxes]
    for x1, y1, x2, y2 in target["boxes"].int().tolist():
        assert pixels[:, y1:y2, x1:x2].min() == 255  # each box covers its drawn rectangle


def test_official_file_keeps_all_4784_boxes_despite_its_defects(taco_annotations: Path) -> None:
    data = read_coco(taco_annotations)
    ids = [a["id"] for a in data["annotations"]]
    assert len(ids) == len(set(ids)) == 4784  # ids 309 and 4040 renumbered, none lost
    dataset = TacoDataset(data, None, load_class_set("litter"))
    assert len(dataset) == 1500
    assert sum(len(r.boxes) for r in dataset.records) == 4784
    assert dataset.report.clipped == 7 and dataset.report.degenerate == 0
    for record in dataset.records:
        if len(record.boxes):
            assert record.boxes.min() >= 0
            assert (record.boxes[:, 2] <= record.width).all()
            assert (record.boxes[:, 3] <= record.height).all()
    # Both annotations that shared id 309 survive, on their own images.
    assert {93, 101} <= {r.image_id for r in dataset.records if len(r.boxes)}
    taco15 = TacoDataset(data, None, load_class_set("taco15"), keep_empty=False)
    assert taco15.report.kept + taco15.report.not_in_class_set == 4784
    # Litter of other categories is never "nothing": its boxes are kept as ignore regions...
    outside = sum(len(r.outside) for r in taco15.records)
    assert outside == taco15.report.not_in_class_set == 1147
    assert len(taco15) == 1500
    # ... or, for training without an 'other litter' class, their images are left out.
    dropping = TacoDataset(data, None, load_class_set("taco15"), drop_outside=True)
    assert dropping.dropped_outside == 615 and len(dropping) == 1500 - 615


def test_clipping_degenerate_boxes_and_negatives(tmp_path: Path) -> None:
    Image.new("RGB", (100, 80)).save(tmp_path / "a.png")
    Image.new("RGB", (100, 80)).save(tmp_path / "b.png")
    data = _coco(
        [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
        ],
        [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [-1.5, -0.5, 20, 10]},
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [90, 70, 30, 30]},  # duplicate id
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},  # no width
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [120, 10, 5, 5]},
        ],  # outside
        ["a"],
    )
    dataset = TacoDataset(data, tmp_path, load_class_set("all", data["categories"]))
    assert len(dataset) == 2
    assert dataset.records[0].boxes.tolist() == [[0.0, 0.0, 18.5, 9.5], [90.0, 70.0, 100.0, 80.0]]
    assert dataset.report.degenerate == 2 and dataset.report.clipped == 3
    _, negative = dataset[1]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    gt = dataset.ground_truth()
    expected = [[0.0, 0.0, 18.5, 9.5], [90.0, 70.0, 10.0, 10.0]]
    assert [a["bbox"] for a in gt["annotations"]] == expected


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_image_and_its_annotation_line_up(tmp_path: Path, orientation: int) -> None:
    upright = Image.new("RGB", (160, 90))
    ImageDraw.Draw(upright).rectangle([100, 10, 139, 29], fill=(255, 255, 255))
    save_with_orientation(upright, tmp_path / "rotated.jpg", orientation)
    with Image.open(tmp_path / "rotated.jpg") as stored:
        assert stored.getexif()[0x0112] == orientation
        assert stored.size == ((90, 160) if orientation in (6, 8) else (160, 90))
        raw = torch.from_numpy(np.array(stored)).permute(2, 0, 1)
        assert _bright_box(raw) != [100, 10, 140, 30]  # the stored pixels really are turned
    data = _coco(
        [{"id": 1, "file_name": "rotated.jpg", "width": 160, "height": 90}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 10, 40, 20]}],
        ["a"],
    )
    pixels, target = TacoDataset(data, tmp_path, load_class_set("all", data["categories"]))[0]
    assert pixels.shape == (3, 90, 160)
    assert target["boxes"].tolist() == [[100.0, 10.0, 140.0, 30.0]]
    found = _bright_box(pixels)
    assert all(abs(a - b) <= 1 for a, b in zip(found, [100, 10, 140, 30], strict=True))


def test_size_mismatch_with_the_annotation_is_an_error(tmp_path: Path) -> None:
    Image.new("RGB", (90, 160)).save(tmp_path / "a.jpg")
    data = _coco([{"id": 1, "file_name": "a.jpg", "width": 160, "height": 90}], [], ["a"])
    dataset = TacoDataset(data, tmp_path, load_class_set("all", data["categories"]))
    with pytest.raises(ImageSizeError, match="before EXIF rotation"):
        dataset[0]


def test_generated_shapes_dataset(shapes: Path) -> None:
    data = json.loads((shapes / "annotations.json").read_text())
    classes = load_class_set("all", data["categories"])
    dataset = TacoDataset(shapes / "annotations.json", shapes, classes)
    assert len(dataset) == 12
    assert sum(len(r.boxes) for r in dataset.records) == len(data["annotations"])
    assert sum(1 for r in dataset.records if len(r.boxes) == 0) == 2
    assert set(dataset.aspect_groups()) == {0, 1}
    image, target = dataset[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3


def _detection_on(annotation: dict[str, Any], score: float, label: int) -> dict[str, Any]:
    """An evaluation result with one box exactly on `annotation`'s."""
    x, y, w, h = annotation["bbox"]
    return {
        "image_id": annotation["image_id"],
        "boxes": [[x, y, x + w, y + h]],
        "scores": [score],
        "labels": [label],
    }


def test_litter_outside_the_class_set_is_ignored_in_scoring_never_background(
    shapes: Path,
) -> None:
    """Triangles are litter the set leaves out: a detection there is no false positive."""
    data = read_coco(shapes / "annotations.json")
    no_triangles = ClassSet(name="no-triangles", classes=("circle", "square"))
    dataset = TacoDataset(data, shapes, no_triangles)
    triangles = [a for a in data["annotations"] if a["category_id"] == 3]
    assert triangles and sum(len(r.outside) for r in dataset.records) == len(triangles)
    gt = dataset.ground_truth()
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(crowd) == 2 * len(triangles)  # an ignore region for every class
    real = [a for a in gt["annotations"] if not a["iscrowd"]]
    perfect = [_detection_on(a, 0.5, a["category_id"]) for a in real]
    on_triangles = [_detection_on(a, 0.99, 1) for a in triangles]
    metrics = coco_metrics(gt, perfect + on_triangles, no_triangles.classes)
    assert metrics["map"] == pytest.approx(1.0)
    # Training: images with triangles are left out, or the triangles become 'other litter'.
    dropping = TacoDataset(data, shapes, no_triangles, drop_outside=True)
    held = {a["image_id"] for a in triangles}
    assert {r.image_id for r in dropping.records}.isdisjoint(held)
    with_other = no_triangles.with_other()
    assert with_other.classes == ("circle", "square", "other litter")
    assert with_other.scored() == no_triangles
    other = TacoDataset(data, shapes, with_other, drop_outside=True)
    assert len(other) == len(data["images"])
    assert sum(int((r.labels == 3).sum()) for r in other.records) == len(triangles)
