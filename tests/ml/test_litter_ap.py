"""The class-agnostic `litter` AP: a wrong class on the right box is a hit, crowd regions stay
ignored, and two classes on one object still cost a false positive."""

from __future__ import annotations

import pytest

from ml.coco_eval import coco_metrics


def _gt(crowd: bool = False) -> dict:
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 60, 40], "iscrowd": 0},
    ]
    if crowd:  # litter outside the class set, as TacoDataset.ground_truth marks it
        annotations += [
            {"id": 3 + c, "image_id": 1, "category_id": c, "bbox": [150, 10, 30, 30], "iscrowd": 1}
            for c in (1, 2)
        ]
    for a in annotations:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    return {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "bottle"}],
    }


def _dets(boxes: list[list[float]], scores: list[float], labels: list[int]) -> list[dict]:
    return [{"image_id": 1, "boxes": boxes, "scores": scores, "labels": labels}]


def test_confused_classes_still_find_the_litter() -> None:
    # Both boxes found; the bottle called a can.
    metrics = coco_metrics(
        _gt(), _dets([[10, 10, 60, 60], [100, 100, 160, 140]], [0.9, 0.8], [1, 1]), ["can", "b"]
    )
    assert metrics["map"] == pytest.approx(0.5)  # can 1.0, bottle 0.0
    assert metrics["litter"]["map"] == pytest.approx(1.0)
    assert metrics["litter"]["map"] >= sum(metrics["per_class"].values()) / 2


def test_crowd_regions_and_duplicates_in_the_litter_ap() -> None:
    perfect = [[10, 10, 60, 60], [100, 100, 160, 140]]
    on_crowd = _dets([*perfect, [151, 11, 180, 40]], [0.9, 0.8, 0.99], [1, 2, 1])
    assert coco_metrics(_gt(crowd=True), on_crowd, ["can", "b"])["litter"]["map"] == (
        pytest.approx(1.0)
    )
    # The can found twice, as can and as bottle, the second copy ranked above the bottle.
    twice = _dets([*perfect, [10, 10, 60, 60]], [0.9, 0.5, 0.7], [1, 2, 2])
    assert coco_metrics(_gt(), twice, ["can", "b"])["litter"]["map"] < 1.0


def test_no_detections_score_litter_zero() -> None:
    assert coco_metrics(_gt(), [], ["can", "b"])["litter"]["map"] == 0.0
