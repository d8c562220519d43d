"""TACO category -> supercategory, from a data file copied out of TACO's annotations."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

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
