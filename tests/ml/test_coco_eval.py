"""The pycocotools wrapper: perfect detections score 1, wrong ones 0, undefined stays None."""

from __future__ import annotations

import pytest

from ml.coco_eval import coco_metrics

GROUND_TRUTH = {
    "images": [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10, 10, 50, 50],
            "area": 2500,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 2,
            "category_id": 2,
            "bbox": [100, 100, 60, 40],
            "area": 2400,
            "iscrowd": 0,
        },
    ],
    "categories": [{"id": 1, "name": "can"}, {"id": 2, "name": "bottle"}, {"id": 3, "name": "lid"}],
}
NAMES = ["can", "bottle", "lid"]


def _det(image_id: int, box: list[float], label: int, score: float = 0.9) -> dict:
    return {"image_id": image_id, "boxes": [box], "scores": [score], "labels": [label]}


def test_perfect_detections_score_one() -> None:
    dets = [_det(1, [10, 10, 60, 60], 1), _det(2, [100, 100, 160, 140], 2)]
    metrics = coco_metrics(GROUND_TRUTH, dets, NAMES)
    for key in ("map", "map50", "map75", "map_medium"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["map_small"] is None and metrics["map_large"] is None  # no such boxes
    assert metrics["per_class"] == {
        "can": pytest.approx(1.0),
        "bottle": pytest.approx(1.0),
        "lid": None,
    }


def test_wrong_class_or_place_scores_zero_and_half_overlap_counts_at_50_only() -> None:
    wrong = [_det(1, [10, 10, 60, 60], 2), _det(2, [0, 0, 30, 30], 2)]
    assert coco_metrics(GROUND_TRUTH, wrong, NAMES)["map50"] == 0.0
    # IoU of a 50x50 box shifted by 10 px: 40*50 / (2*2500 - 2000) = 0.667.
    shifted = [_det(1, [20, 10, 70, 60], 1), _det(2, [100, 100, 160, 140], 2)]
    metrics = coco_metrics(GROUND_TRUTH, shifted, NAMES)
    assert metrics["per_class_ap50"]["can"] == pytest.approx(1.0)
    assert metrics["per_class"]["can"] == pytest.approx(0.4, abs=0.01)  # IoU 0.5..0.65 of 10


def test_no_detections_is_zero_not_a_crash() -> None:
    metrics = coco_metrics(GROUND_TRUTH, [], NAMES)
    assert metrics["map"] == 0.0 and metrics["map50"] == 0.0
    assert metrics["per_class"]["lid"] is None and metrics["detections"] == 0
    assert metrics["map_medium"] == 0.0 and metrics["map_small"] is None
