"""TACO category -> supercategory, from a data file copied out of TACO's annotations."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "taco_supercategories.json"


@cache
def category_to_supercategory() -> dict[str, str]:
    """The 60 TACO category names mapped to their 28 supercategories (read once)."""
    return dict(json.loads(DATA_FILE.read_text())["categories"])


def supercategories() -> list[str]:
    return sorted(set(category_to_supercategory().values()))


@cache
def _label_lookup() -> dict[str, str]:
    mapping = category_to_supercategory()
    return {**{sup: sup for sup in mapping.values()}, **mapping}


def supercategory_of(label: str) -> str | None:
    """A TACO category's supercategory; a model trained on supercategories predicts them as is."""
    return _label_lookup().get(label)


def labels_in(supercategory: str) -> list[str]:
    """Every label that belongs to `supercategory`, including the supercategory's own name."""
    names = {name for name, sup in category_to_supercategory().items() if sup == supercategory}
    return sorted(names | {supercategory})


@cache
def class_set_files() -> dict[str, dict[str, Any]]:
    """The class sets shipped in ml/classes/ (name -> its JSON), read as data, never imported.

    The web reads them to validate labels without loading ml (which needs torch).
    """
    import importlib.util

    spec = importlib.util.find_spec("ml")  # locates the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec else []
    sets: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted((Path(folder) / "classes").glob("*.json")):
            data = json.loads(path.read_text())
            sets[str(data.get("name", path.stem))] = data
    return sets


def class_set_names() -> dict[str, tuple[str, ...]]:
    """Each shipped class set's classes, in label order."""
    return {name: tuple(str(c) for c in d["classes"]) for name, d in class_set_files().items()}


def class_in_set(class_set: dict[str, Any], label: str) -> str | None:
    """The class of a shipped class set (its JSON) that a box label falls into, or None.

    The rule of ml.categories.ClassSet.class_for, for a label rather than a COCO category.
    """
    key = label
    if class_set.get("match", "name") == "supercategory":
        key = supercategory_of(label) or label
    mapping = class_set.get("map") or {}
    if key in mapping:
        return str(mapping[key])
    if key in class_set["classes"]:
        return key
    default = class_set.get("default")
    return str(default) if default is not None else None


@cache
def known_labels() -> frozenset[str]:
    """Every label a box may carry without a model naming it: TACO's categories, their
    supercategories and the classes of every shipped class set."""
    names = set(category_to_supercategory()) | set(supercategories())
    for classes in class_set_names().values():
        names.update(classes)
    return frozenset(names)
