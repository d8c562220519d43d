"""cv_summary from fold outputs built without training: real folds, crafted detections scored
by coco_metrics, written where `trashmap ml train` writes each fold's metrics."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ml import train
from ml.categories import load_class_set
from ml.coco_eval import coco_metrics
from ml.cross_validate import SUMMARY, TABLE, fold_dir, summarise
from ml.data.coco_file import read_coco, write_json
from ml.splits import make_folds, write_folds

FOLDS = 3
# Each fold's detections give this share of boxes the wrong class (the right box, though).
CONFUSED = (0.2, 0.4, 0.6)


def _dataset(names: list[str], images: int = 18, seed: int = 5) -> dict[str, Any]:
    rng = random.Random(seed)
    annotations = []
    for image_id in range(1, images + 1):
        for slot in range(3):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": rng.randint(1, len(names)),
                    "bbox": [10 + 60 * slot, 20, 40, 40],
                    "area": 1600,
                    "iscrowd": 0,
                }
            )
    return {
        "images": [
            {"id": i, "width": 200, "height": 100, "file_name": f"{i}.jpg"}
            for i in range(1, images + 1)
        ],
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }


def _fold_outputs(out: Path, data: dict[str, Any], class_set_name: str) -> dict[str, int]:
    """Folds as `cv` makes them, each scored on crafted detections; test boxes per class."""
    class_set = load_class_set(class_set_name, data["categories"])
    folds = make_folds(data, class_set, FOLDS, seed=1, val_fraction=0.2)
    write_folds(data, class_set, folds, out / "folds", seed=1)
    labels = class_set.category_labels(data["categories"])
    rng = random.Random(9)
    boxes: Counter[str] = Counter()
    for k in range(FOLDS):
        test = read_coco(out / "folds" / f"fold_{k}" / "test.json")
        gt = {
            "images": test["images"],
            "annotations": [
                {**a, "category_id": labels[a["category_id"]]} for a in test["annotations"]
            ],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_set.classes)],
        }
        boxes.update(class_set.classes[a["category_id"] - 1] for a in gt["annotations"])
        detections = []
        for a in gt["annotations"]:
            x, y, w, h = a["bbox"]
            label = a["category_id"]
            if rng.random() < CONFUSED[k]:
                label = label % len(class_set.classes) + 1
            detections.append(
                {
                    "image_id": a["image_id"],
                    "boxes": [[x, y, x + w, y + h]],
                    "scores": [rng.uniform(0.3, 1.0)],
                    "labels": [label],
                }
            )
        metrics = coco_metrics(gt, detections, class_set.classes)
        write_json(
            {"best_epoch": 0, "val": {"map": metrics["map"]}, "test": metrics},
            fold_dir(out, k) / train.METRICS,
        )
    return dict(boxes)


def test_summary_reports_intervals_litter_ap_and_box_counts(tmp_path: Path) -> None:
    data = _dataset(["can", "bottle", "lid"])
    boxes = _fold_outputs(tmp_path, data, "all")
    summary = summarise(tmp_path, FOLDS)
    assert json.loads((tmp_path / SUMMARY).read_text()) == summary

    maps = [f["map"] for f in summary["per_fold"]]
    assert len(set(maps)) == FOLDS  # the folds differ, so the interval is not a point
    for key in ("map", "map50", "litter_map"):
        low, high = summary["ci95"][key]
        assert low <= summary["mean"][key] <= high
    low, high = summary["ci95"]["map"]
    assert min(maps) <= low < high <= max(maps)

    # Every box is found, some under the wrong class: merged into one class, all are hits.
    assert summary["mean"]["litter_map"] == pytest.approx(1.0)
    assert summary["mean"]["litter_map"] > summary["mean"]["map"]
    per_class_mean = sum(summary["mean"]["per_class"].values()) / 3
    assert summary["mean"]["litter_map"] >= per_class_mean
    assert all(f["litter_map50"] == pytest.approx(1.0) for f in summary["per_fold"])

    assert summary["test_boxes"] == boxes
    assert sum(boxes.values()) == len(data["annotations"])  # test folds cover every image
    assert summary["class_set"] == "all" and "taco10" not in summary
    table = (tmp_path / TABLE).read_text()
    assert "| 95% interval |" in table and "litter_map" in table
    assert f"| can | {boxes['can']} |" in table
    assert "TACO-10" not in table


def test_taco10_runs_get_the_papers_table(tmp_path: Path) -> None:
    data = _dataset(["Drink can", "Clear plastic bottle", "Cigarette", "Glass bottle"])
    boxes = _fold_outputs(tmp_path, data, "taco10")
    summary = summarise(tmp_path, FOLDS)
    table = summary["taco10"]
    assert list(table["per_class"]) == list(load_class_set("taco10").classes)
    assert table["per_class"]["Can"]["test_boxes"] == boxes["Can"]
    assert table["per_class"]["Bottle"]["test_boxes"] == boxes["Bottle"]
    assert table["per_class"]["Straw"] == {"ap": None, "ap50": None, "test_boxes": 0}
    assert table["taco1"]["map"]["mean"] == summary["mean"]["litter_map"]
    assert table["taco10"]["map50"]["ci95"] == summary["ci95"]["map50"]
    text = (tmp_path / TABLE).read_text()
    assert "| TACO-1 (litter) |" in text and "| TACO-10 class | test boxes | AP | AP50 |" in text
    assert f"| Can | {boxes['Can']} |" in text


def test_folds_scored_before_the_litter_ap_still_summarise(tmp_path: Path) -> None:
    for k in range(2):
        write_json(
            {"best_epoch": 1, "test": {"map": 0.1 * (k + 1), "per_class": {"can": 0.1}}},
            fold_dir(tmp_path, k) / train.METRICS,
        )
    summary = summarise(tmp_path, 2)
    assert summary["mean"]["litter_map"] is None and summary["ci95"]["litter_map"] is None
    assert summary["ci95"]["map"] is not None and summary["test_boxes"] == {"can": None}
