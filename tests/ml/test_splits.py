"""Folds are over images, disjoint, complete, stratified and reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.categories import load_class_set
from ml.data.coco_file import read_coco
from ml.splits import SplitError, class_counts, make_folds, write_folds


@pytest.fixture(scope="module")
def taco(taco_annotations: Path) -> dict:
    return read_coco(taco_annotations)


def test_folds_are_disjoint_cover_every_image_and_repeat_with_the_seed(taco: dict) -> None:
    taco10 = load_class_set("taco10")
    folds = make_folds(taco, taco10, 5, seed=42, val_fraction=0.15)
    all_ids = {img["id"] for img in taco["images"]}
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == all_ids
    assert sum(len(t) for t in tests) == len(all_ids)  # pairwise disjoint
    for fold in folds:
        parts = [set(fold.train), set(fold.val), set(fold.test)]
        assert set().union(*parts) == all_ids and sum(map(len, parts)) == len(all_ids)
        assert 0.12 < len(fold.val) / (len(fold.train) + len(fold.val)) < 0.18
        assert 270 <= len(fold.test) <= 330  # balanced sizes
    assert make_folds(taco, taco10, 5, seed=42, val_fraction=0.15) == folds
    assert make_folds(taco, taco10, 5, seed=7, val_fraction=0.15) != folds


def test_rare_classes_spread_over_folds(taco: dict) -> None:
    supercategories = load_class_set("supercategories")
    folds = make_folds(taco, supercategories, 5, seed=42, val_fraction=0.15)
    total = class_counts(taco, supercategories, tuple(i["id"] for i in taco["images"]))
    for name in ("Pop tab", "Lid", "Glass jar", "Plastic glooves"):  # 99, 87, 6, 4 boxes
        with_class = [f.index for f in folds if class_counts(taco, supercategories, f.test)[name]]
        assert len(with_class) >= min(5, total[name] // 2), (name, with_class)


def test_written_folds_are_coco_files_with_a_report(taco: dict, tmp_path: Path) -> None:
    litter = load_class_set("supercategories")
    folds = make_folds(taco, litter, 3, seed=1, val_fraction=0.1)
    manifest = write_folds(taco, litter, folds, tmp_path, seed=1)
    for fold in folds:
        test = json.loads((tmp_path / f"fold_{fold.index}" / "test.json").read_text())
        assert sorted(i["id"] for i in test["images"]) == list(fold.test)
        assert {a["image_id"] for a in test["annotations"]} <= set(fold.test)
        assert test["categories"] == taco["categories"]
    # Battery has 2 boxes: at least one of 3 test folds must lack it, and the report says so.
    absent = [f["test"]["absent_classes"] for f in manifest["per_fold"]]
    assert any("Battery" in a for a in absent)
    assert json.loads((tmp_path / "folds.json").read_text()) == manifest
    with pytest.raises(SplitError, match="another --out"):
        write_folds(taco, litter, folds, tmp_path, seed=2)


def test_a_single_class_set_splits_too(taco: dict) -> None:
    folds = make_folds(taco, load_class_set("litter"), 5, seed=0, val_fraction=0.1)
    assert sum(len(f.test) for f in folds) == 1500


def test_too_many_folds_is_refused() -> None:
    tiny = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}],
    }
    with pytest.raises(SplitError, match="between 2"):
        make_folds(tiny, load_class_set("all", tiny["categories"]), 3, seed=0, val_fraction=0.1)
