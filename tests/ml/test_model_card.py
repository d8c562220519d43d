"""The model card: built from a run's metrics, written as JSON + markdown, and kept in the
checkpoint by `trashmap ml train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml import recipe
from ml.categories import load_class_set
from ml.coco_eval import coco_metrics
from ml.detector import read_checkpoint
from ml.model_card import CARD_JSON, CARD_MD, build_card, render_markdown, write_card
from ml.train import TrainOptions, TrainResult


def _metrics(names: tuple[str, ...]) -> dict:
    """circle found and square found under the wrong class; no triangle in this split."""
    gt = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 100, 60, 40], "iscrowd": 0},
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    for a in gt["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    dets = [
        {
            "image_id": 1,
            "boxes": [[10, 10, 60, 60], [100, 100, 160, 140]],
            "scores": [0.9, 0.7],
            "labels": [1, 1],
        }
    ]
    return coco_metrics(gt, dets, names)


def test_card_holds_data_recipe_metrics_threshold_and_limits(shapes: Path, tmp_path: Path) -> None:
    annotations = shapes / "annotations.json"
    options = TrainOptions(
        annotations=annotations,
        images=shapes,
        out=tmp_path,
        test_annotations=annotations,
        classes="all",
        lr=3e-4,
        slice_size=512,
    )
    categories = json.loads(annotations.read_text())["categories"]
    class_set = load_class_set("all", categories)
    metrics = _metrics(class_set.classes)
    summary = {"best_epoch": 3, "val": metrics, "test": metrics, "images_per_s": 2.5}
    info = recipe.model_info(options, class_set, summary)
    card = build_card(options, class_set, info, summary)

    assert card["model"]["arch"] == options.model
    assert card["data"]["images"] == 12 and card["data"]["annotations"] == str(annotations)
    assert card["data"]["test"]["images"] == 1 and card["data"]["test"]["boxes"] == 2
    assert card["classes"]["names"] == list(class_set.classes)
    assert card["recipe"]["lr"] == 3e-4 and "out" not in card["recipe"]
    test = card["metrics"]["test"]
    assert test["per_class_ap"]["triangle"] is None
    assert test["litter"]["map"] == pytest.approx(1.0) and test["map"] < 0.9
    assert {"map_small", "map_small_original"} <= set(test)
    assert card["threshold"]["value"] == info.score_threshold == pytest.approx(0.9)
    assert card["threshold"]["source"].startswith("best F1")
    assert card["slicing"]["size"] == 512
    assert test["per_class_boxes"] == {"circle": 1, "square": 1, "triangle": 0}
    assert "No test boxes of triangle: their AP is unknown." in card["limits"]
    assert any("circle (1), square (1)" in limit for limit in card["limits"])

    json_path, md_path = write_card(card, tmp_path)
    assert json_path == tmp_path / CARD_JSON and md_path == tmp_path / CARD_MD
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(card))
    text = md_path.read_text()
    assert text == render_markdown(json.loads(json_path.read_text()))  # rendered from the JSON
    for heading in ("## Intended use", "## Data", "## Metrics", "## Recipe", "## Limits"):
        assert heading in text
    assert "| triangle | n/a | n/a | n/a | 0 |" in text and "tiles of 512 px" in text
    assert "| lr | 0.0003 |" in text


def test_training_writes_the_card_next_to_and_inside_the_checkpoint(
    trained: tuple[TrainOptions, TrainResult],
) -> None:
    options, result = trained
    info, payload = read_checkpoint(result.checkpoint)
    card = json.loads((options.out / CARD_JSON).read_text())
    assert payload["card"] == card
    assert card["model"]["version"] == info.version
    assert card["threshold"]["value"] == info.score_threshold
    assert result.test_metrics is not None
    assert card["metrics"]["test"]["map50"] == result.test_metrics["map50"]
    assert card["data"]["test"]["images"] == 24
    assert (options.out / CARD_MD).read_text().startswith(f"# Model card: {info.name}:")
