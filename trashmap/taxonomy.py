"""TACO category -> supercategory, from a data file copied out of TACO's annotations."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "taco_supercategories.json"
# The class sets a detector can be trained on (taco10, taco15, litter, ...), as data files.
CLASS_SETS_DIR = DATA_FILE.parent / "classes"
# The class a model trained with `--other-litter` predicts for litter outside its class set;
# it belongs to TACO's own catch-all supercategory, so map filters and stats count it.
OTHER_LITTER = "other litter"
OTHER_LITTER_SUPERCATEGORY = "Unlabeled litter"


@cache
def category_to_supercategory() -> dict[str, str]:
    """The 60 TACO category names mapped to their 28 supercategories (read once)."""
    return dict(json.loads(DATA_FILE.read_text())["categories"])


def supercategories() -> list[str]:
    return sorted(set(category_to_supercategory().values()))


@cache
def label_supercategories() -> dict[str, str]:
    """Every label a detection may carry (categories, supercategories, other litter) -> its
    supercategory."""
    mapping = category_to_supercategory()
    return {
        **{sup: sup for sup in mapping.values()},
        **mapping,
        OTHER_LITTER: OTHER_LITTER_SUPERCATEGORY,
    }


def supercategory_of(label: str) -> str | None:
    """A TACO category's supercategory; a model trained on supercategories predicts them as is."""
    return label_supercategories().get(label)


def labels_in(supercategory: str) -> list[str]:
    """Every label that belongs to `supercategory`, including the supercategory's own name."""
    names = {name for name, sup in label_supercategories().items() if sup == supercategory}
    return sorted(names | {supercategory})


@cache
def class_set_files() -> dict[str, dict[str, Any]]:
    """The class sets shipped in trashmap/data/classes/ (name -> its JSON).

    ml/ trains with them (ml.categories); the web validates labels against them.
    """
    sets: dict[str, dict[str, Any]] = {}
    for path in sorted(CLASS_SETS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        sets[str(data.get("name", path.stem))] = data
    return sets


def class_set_names() -> dict[str, tuple[str, ...]]:
    """Each shipped class set's classes, in label order."""
    return {name: tuple(str(c) for c in d["classes"]) for name, d in class_set_files().items()}


def class_in_set(class_set: dict[str, Any], label: str) -> str | None:
    """The class of a shipped class set (its JSON) that a box label falls into, or None.

    The same rule as ml.categories.ClassSet.class_for (class_of), for a label.
    """
    key = label
    if class_set.get("match", "name") == "supercategory":
        key = supercategory_of(label) or label
    default = class_set.get("default")
    return class_of(
        key,
        class_set["classes"],
        class_set.get("map") or {},
        None if default is None else str(default),
    )


def class_of(
    key: str, classes: Collection[str], mapping: Mapping[str, str], default: str | None
) -> str | None:
    """The rule every class set follows: its map first, then its own class names, then its
    default class (None: the set leaves the name out)."""
    if key in mapping:
        return str(mapping[key])
    if key in classes:
        return key
    return default


@cache
def known_labels() -> frozenset[str]:
    """Every label a box may carry without a model naming it: TACO's categories, their
    supercategories and the classes of every shipped class set."""
    names = set(category_to_supercategory()) | set(supercategories())
    for classes in class_set_names().values():
        names.update(classes)
    return frozenset(names)
