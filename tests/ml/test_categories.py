"""Class sets: the shipped data files and how they map TACO's categories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.categories import ClassSet, ClassSetError, builtin_class_sets, load_class_set

TUTORIAL_15 = [
    "Plastic film",
    "Unlabeled litter",
    "Cigarette",
    "Clear plastic bottle",
    "Plastic bottle cap",
    "Other plastic wrapper",
    "Other plastic",
    "Drink can",
    "Plastic straw",
    "Disposable plastic cup",
    "Other carton",
    "Styrofoam piece",
    "Glass bottle",
    "Pop tab",
    "Plastic lid",
]


def test_shipped_class_sets() -> None:
    assert builtin_class_sets() == ["litter", "supercategories", "taco10", "taco15"]
    assert list(load_class_set("taco15").classes) == TUTORIAL_15
    assert len(load_class_set("supercategories").classes) == 28
    assert len(load_class_set("taco10").classes) == 10
    assert load_class_set("litter").classes == ("litter",)


def test_every_taco_category_maps_as_documented(taco_annotations: Path) -> None:
    categories = json.loads(taco_annotations.read_text())["categories"]
    supercategories = load_class_set("supercategories")
    taco10 = load_class_set("taco10")
    litter = load_class_set("litter")
    taco15 = load_class_set("taco15")
    assert set(supercategories.classes) == {c["supercategory"] for c in categories}
    for category in categories:
        assert supercategories.class_for(category) == category["supercategory"]
        assert taco10.class_for(category) is not None, category["name"]
        assert litter.class_for(category) == "litter"
    kept = [c["name"] for c in categories if taco15.class_for(c) is not None]
    assert sorted(kept) == sorted(TUTORIAL_15)
    by_name = {c["name"]: c for c in categories}
    assert taco10.class_for(by_name["Glass bottle"]) == "Bottle"
    assert taco10.class_for(by_name["Broken glass"]) == "Other"
    assert taco10.class_for(by_name["Crisp packet"]) == "Plastic bag & wrapper"


def test_labels_start_at_one_and_round_trip() -> None:
    taco10 = load_class_set("taco10")
    assert taco10.label_of("Bottle") == 1
    assert taco10.name_of(10) == "Straw"
    assert ClassSet.from_dict(taco10.to_dict()) == taco10
    with pytest.raises(ClassSetError, match="outside"):
        taco10.name_of(0)  # 0 is the background


def test_all_uses_the_files_categories_and_files_load(tmp_path: Path) -> None:
    cats = [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}]
    assert load_class_set("all", cats).classes == ("a", "b")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "classes": ["x"], "default": "x"}))
    assert load_class_set(str(path)).class_for({"name": "anything"}) == "x"


def test_unknown_or_broken_class_sets_name_the_choices() -> None:
    with pytest.raises(ClassSetError, match="taco10"):
        load_class_set("taco11")
    with pytest.raises(ClassSetError, match="unlisted"):
        ClassSet.from_dict({"classes": ["a"], "map": {"x": "b"}})
