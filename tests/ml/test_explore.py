"""`explore` on the official TACO file and on a folder of generated images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from ml.explore import META_COLUMNS, ExploreOptions, main


def test_official_annotations(taco_annotations: Path, tmp_path: Path) -> None:
    stats = main(ExploreOptions(annotations=taco_annotations, out=tmp_path))
    assert stats["images"] == 1500
    assert stats["annotations"] == 4784
    assert stats["categories"] == 60
    assert stats["supercategories"] == 28
    assert list(stats["per_supercategory"])[:2] == ["Plastic bag & wrapper", "Cigarette"]
    assert stats["per_supercategory"]["Plastic bag & wrapper"] == 850
    assert sum(stats["per_category"].values()) == 4784
    assert stats["annotations_per_image"]["images_without_annotations"] == 0
    assert stats["defects"] == {
        "duplicate_annotation_ids": [309, 4040],
        "boxes_outside_image": 7,
        "undefined_scene_ids": [7],
    }
    resized = stats["box_sizes_after_resize"]
    assert resized["min_size"] == 800 and sum(resized["coco_size_classes"].values()) == 4784
    # The buckets of `map_small`...: box area at the 800 px input; of `map_small_original`...:
    # TACO's segment area at full size. Same names would hide a 2.4x gap in small objects.
    assert resized["coco_size_classes"] == {"small": 1732, "medium": 1529, "large": 1523}
    assert resized["coco_size_classes_original"] == {"small": 715, "medium": 1387, "large": 2682}
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    with open(tmp_path / "meta_df.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4784 and tuple(rows[0]) == META_COLUMNS
    assert rows[0]["img_file"] == "batch_1/000006.jpg"
    assert rows[0]["supercategory"] == "Bottle" and float(rows[0]["height"]) == 1322.0
    chart = Image.open(tmp_path / "supercategories.png")
    assert chart.width > 400 and chart.height > 300
    assert not (tmp_path / "samples.png").exists()  # no images given


def test_samples_are_drawn_when_images_exist(shapes: Path, tmp_path: Path) -> None:
    stats = main(
        ExploreOptions(
            annotations=shapes / "annotations.json",
            images=shapes,
            out=tmp_path,
            min_size=128,
            max_size=200,
            samples=4,
        )
    )
    assert stats["images"] == 12
    assert stats["annotations_per_image"]["images_without_annotations"] == 2
    assert Image.open(tmp_path / "samples.png").width > 200
    with open(tmp_path / "meta_df.csv", newline="") as fh:
        first = next(csv.DictReader(fh))
    assert Path(first["full_path"]).is_file()
