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


def test_size_buckets_measure_boxes_as_the_model_sees_them() -> None:
    """A 60 px box on a 4000x3000 photo is 16 px at the 800 px input: small, not medium."""
    gt = {
        "images": [{"id": 1, "width": 4000, "height": 3000}],
        "annotations": [
            # TACO's area is the segment's, smaller than the box's.
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [100, 100, 60, 60],
                "area": 1500,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1000, 1000, 600, 600],
                "area": 300_000,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "can"}],
    }
    dets = [
        {
            "image_id": 1,
            "boxes": [[100, 100, 160, 160], [1000, 1000, 1600, 1600]],
            "scores": [0.9, 0.8],
            "labels": [1, 1],
        }
    ]
    metrics = coco_metrics(gt, dets, ["can"], input_size=(800, 1333))
    assert metrics["map_small"] == pytest.approx(1.0)  # 16x16 px at the input
    assert metrics["map_large"] == pytest.approx(1.0)  # 160x160 px at the input
    assert metrics["map_medium"] is None
    # The reference definition, by the file's area at full size, under its own keys.
    assert metrics["map_medium_original"] == pytest.approx(1.0)
    assert metrics["map_large_original"] == pytest.approx(1.0)
    assert metrics["map_small_original"] is None
    nothing = coco_metrics(gt, [], ["can"], input_size=(800, 1333))
    assert nothing["map_small"] == 0.0 and nothing["map_medium"] is None
    assert nothing["map_medium_original"] == 0.0 and nothing["map_small_original"] is None


def test_crowd_regions_are_neither_hits_nor_false_positives() -> None:
    gt = {
        **GROUND_TRUTH,
        "annotations": GROUND_TRUTH["annotations"]
        + [
            {
                "id": 2 + c,
                "image_id": 1,
                "category_id": c,
                "bbox": [120, 120, 40, 40],
                "area": 1600,
                "iscrowd": 1,
            }
            for c in (1, 2, 3)
        ],
    }
    perfect = [_det(1, [10, 10, 60, 60], 1), _det(2, [100, 100, 160, 140], 2)]
    # The most confident detection lies on litter of another category.
    on_other = perfect + [_det(1, [121, 121, 160, 160], 1, score=0.99)]
    metrics = coco_metrics(gt, on_other, NAMES)
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["annotations"] == 2


def test_best_f1_threshold_from_the_matches() -> None:
    # Two objects; detections TP 0.9, FP 0.8, TP 0.6, FP 0.3 -> F1 0.67, 0.5, 0.8, 0.67.
    dets = [
        {
            "image_id": 1,
            "boxes": [[10, 10, 60, 60], [150, 150, 190, 190]],
            "scores": [0.9, 0.8],
            "labels": [1, 1],
        },
        {
            "image_id": 2,
            "boxes": [[100, 100, 160, 140], [0, 0, 20, 20]],
            "scores": [0.6, 0.3],
            "labels": [2, 2],
        },
    ]
    chosen = coco_metrics(GROUND_TRUTH, dets, NAMES)["best_f1"]
    assert chosen["threshold"] == pytest.approx(0.6)
    assert chosen["f1"] == pytest.approx(0.8)
    assert chosen["precision"] == pytest.approx(2 / 3) and chosen["recall"] == pytest.approx(1.0)


def test_detections_of_an_unscored_catch_all_class_are_left_out() -> None:
    perfect = [_det(1, [10, 10, 60, 60], 1), _det(2, [100, 100, 160, 140], 2)]
    metrics = coco_metrics(GROUND_TRUTH, perfect + [_det(1, [0, 0, 9, 9], 4, 0.99)], NAMES)
    assert metrics["detections"] == 2 and metrics["map"] == pytest.approx(1.0)
