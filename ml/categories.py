"""Class sets: which TACO categories a model learns, as names with label 0 kept for background.

A class set is a data file in `trashmap/data/classes/` (or any JSON file of the same shape):

    {"name": "taco10", "match": "name" | "supercategory", "classes": [...],
     "map": {"<category or supercategory>": "<class>"},   # optional, default: identity
     "default": "<class>"}                                 # optional, else unmatched are dropped

Label `i + 1` is `classes[i]`; 0 is the background the detector reserves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from trashmap.taxonomy import OTHER_LITTER, class_of

logger = logging.getLogger(__name__)

# `--classes all`: the annotation file's own categories, in id order.
FROM_ANNOTATIONS = "all"
# `with_other` adds OTHER_LITTER (trashmap.taxonomy) for boxes of categories a set leaves out.
_MATCH_FIELDS = ("name", "supercategory")


class ClassSetError(ValueError):
    """A class set is unknown or its file is malformed."""


@dataclass(frozen=True)
class ClassSet:
    """An ordered list of class names and the rule that maps a COCO category onto one."""

    name: str
    classes: tuple[str, ...]
    match: str = "name"
    mapping: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None
    description: str = ""
    # The catch-all class of categories the set leaves out: trained, never scored.
    other: str | None = None

    def __post_init__(self) -> None:
        if not self.classes:
            raise ClassSetError(f"class set {self.name!r} has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise ClassSetError(f"class set {self.name!r} lists a class twice")
        if self.match not in _MATCH_FIELDS:
            raise ClassSetError(
                f"class set {self.name!r}: match must be one of {_MATCH_FIELDS}, not {self.match!r}"
            )
        unknown = {c for c in self.mapping.values() if c not in self.classes}
        if self.default is not None and self.default not in self.classes:
            unknown.add(self.default)
        if unknown:
            raise ClassSetError(f"class set {self.name!r} maps onto unlisted classes {unknown}")

    def with_other(self, name: str = OTHER_LITTER) -> ClassSet:
        """This set plus a last class taking every category it leaves out (if it has no default)."""
        if self.default is not None or self.other is not None:
            return self
        return dataclasses.replace(self, classes=(*self.classes, name), default=name, other=name)

    def scored(self) -> ClassSet:
        """The classes evaluation scores: without the catch-all class, same labels."""
        if self.other is None:
            return self
        return dataclasses.replace(self, classes=self.classes[:-1], default=None, other=None)

    @property
    def num_classes(self) -> int:
        """Model outputs, background included."""
        return len(self.classes) + 1

    def label_of(self, class_name: str) -> int:
        """1-based label of a class name."""
        try:
            return self.classes.index(class_name) + 1
        except ValueError:
            raise ClassSetError(
                f"{class_name!r} is not in class set {self.name!r}: {list(self.classes)}"
            ) from None

    def name_of(self, label: int) -> str:
        """Class name of a 1-based label."""
        if not 1 <= label <= len(self.classes):
            raise ClassSetError(f"label {label} is outside 1..{len(self.classes)}")
        return self.classes[label - 1]

    def class_for(self, category: Mapping[str, Any]) -> str | None:
        """The class a COCO category dict falls into, or None when the set leaves it out."""
        return class_of(str(category.get(self.match, "")), self.classes, self.mapping, self.default)

    def category_labels(self, categories: Iterable[Mapping[str, Any]]) -> dict[int, int]:
        """COCO category id -> label, for the categories this set keeps."""
        labels = {}
        for category in categories:
            cls = self.class_for(category)
            if cls is not None:
                labels[int(category["id"])] = self.label_of(cls)
        return labels

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; stored in checkpoints so evaluation maps categories the same way."""
        out: dict[str, Any] = {
            "name": self.name,
            "match": self.match,
            "classes": list(self.classes),
        }
        if self.mapping:
            out["map"] = dict(self.mapping)
        if self.default is not None:
            out["default"] = self.default
        if self.description:
            out["description"] = self.description
        if self.other is not None:
            out["other"] = self.other
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "class set") -> ClassSet:
        """Parse the JSON form, naming `source` in any error."""
        if not isinstance(data, Mapping) or "classes" not in data:
            raise ClassSetError(f"{source} must be a JSON object with a 'classes' list")
        return cls(
            name=str(data.get("name", source)),
            classes=tuple(str(c) for c in data["classes"]),
            match=str(data.get("match", "name")),
            mapping={str(k): str(v) for k, v in (data.get("map") or {}).items()},
            default=data.get("default"),
            description=str(data.get("description", "")),
            other=data.get("other"),
        )

    @classmethod
    def from_categories(cls, categories: Iterable[Mapping[str, Any]]) -> ClassSet:
        """Every category of an annotation file as its own class, in id order."""
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        return cls(name=FROM_ANNOTATIONS, classes=tuple(str(c["name"]) for c in ordered))


def builtin_class_sets() -> list[str]:
    """Names of the class sets shipped in trashmap/data/classes/."""
    folder = resources.files("trashmap") / "data" / "classes"
    names = (p.name for p in folder.iterdir())
    return sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))


def load_class_set(spec: str, categories: Iterable[Mapping[str, Any]] | None = None) -> ClassSet:
    """A shipped set by name, a JSON file by path, or `all` (needs the file's categories)."""
    if spec == FROM_ANNOTATIONS:
        if categories is None:
            raise ClassSetError("class set 'all' needs the annotation file's categories")
        return ClassSet.from_categories(categories)
    path = Path(spec)
    if spec.endswith(".json") and path.is_file():
        return ClassSet.from_dict(json.loads(path.read_text()), source=str(path))
    shipped = resources.files("trashmap") / "data" / "classes" / f"{spec}.json"
    if shipped.is_file():
        return ClassSet.from_dict(json.loads(shipped.read_text()), source=spec)
    raise ClassSetError(
        f"unknown class set {spec!r}; choose one of {builtin_class_sets() + [FROM_ANNOTATIONS]}"
        " or give a path to a .json class set file"
    )
