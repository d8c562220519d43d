"""Seeded, stratified splits over images (never annotations), written to disk as COCO files."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.categories import ClassSet
from ml.data.coco_file import CocoDict, subset, write_json

logger = logging.getLogger(__name__)

MANIFEST = "folds.json"


class SplitError(ValueError):
    """A split cannot be made or does not match the one already on disk."""


@dataclass(frozen=True)
class Fold:
    """Image ids of one cross-validation fold: train, inner validation, and held-out test."""

    index: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def presence_matrix(data: CocoDict, class_set: ClassSet) -> tuple[list[int], np.ndarray]:
    """Sorted image ids and, per image, which classes of the set it shows (0/1)."""
    labels = class_set.category_labels(data["categories"])
    ids = sorted(img["id"] for img in data["images"])
    row = {image_id: i for i, image_id in enumerate(ids)}
    matrix = np.zeros((len(ids), len(class_set.classes)), dtype=np.int64)
    for ann in data["annotations"]:
        label = labels.get(int(ann["category_id"]))
        if label is not None and ann["image_id"] in row:
            matrix[row[ann["image_id"]], label - 1] = 1
    return ids, matrix


def _labels(matrix: np.ndarray) -> np.ndarray:
    # iterstrat refuses a single column ("binary"); presence and absence as two labels is the
    # same stratification.
    return np.hstack([matrix, 1 - matrix]) if matrix.shape[1] == 1 else matrix


def kfold(ids: list[int], matrix: np.ndarray, folds: int, seed: int) -> list[tuple[int, ...]]:
    """Test image ids of each of `folds` folds; rare classes spread over as many as they can."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if not 2 <= folds <= len(ids):
        raise SplitError(f"--folds must be between 2 and the {len(ids)} images, not {folds}")
    splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        tuple(sorted(ids[i] for i in test))
        for _, test in splitter.split(np.zeros(len(ids)), _labels(matrix))
    ]


def holdout(
    ids: list[int], matrix: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train, val) image ids with `fraction` of the images (at least one) in val, stratified."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    if not 0.0 < fraction < 1.0:
        raise SplitError(f"the validation fraction must be in (0, 1), not {fraction}")
    if len(ids) < 2:
        raise SplitError(f"{len(ids)} image(s) cannot be split into train and validation")
    size = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(ids)), _labels(matrix)))
    return tuple(sorted(ids[i] for i in train)), tuple(sorted(ids[i] for i in val))


def make_folds(
    data: CocoDict, class_set: ClassSet, folds: int, seed: int, val_fraction: float
) -> list[Fold]:
    """K folds; each fold's remaining images are split again for checkpoint selection."""
    ids, matrix = presence_matrix(data, class_set)
    row = {image_id: i for i, image_id in enumerate(ids)}
    result = []
    for k, test in enumerate(kfold(ids, matrix, folds, seed)):
        test_set = set(test)
        rest = [i for i in ids if i not in test_set]
        train, val = holdout(rest, matrix[[row[i] for i in rest]], val_fraction, seed + k)
        result.append(Fold(k, train, val, test))
    return result


def class_counts(data: CocoDict, class_set: ClassSet, image_ids: tuple[int, ...]) -> dict[str, int]:
    """Boxes per class among `image_ids`."""
    labels = class_set.category_labels(data["categories"])
    keep = set(image_ids)
    counts = dict.fromkeys(class_set.classes, 0)
    for ann in data["annotations"]:
        label = labels.get(int(ann["category_id"]))
        if label is not None and ann["image_id"] in keep:
            counts[class_set.classes[label - 1]] += 1
    return counts


def fingerprint(data: CocoDict) -> str:
    """A short hash of the image and annotation ids, to recognise the same source file."""
    ids = json.dumps([sorted(i["id"] for i in data["images"]), len(data["annotations"])])
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def write_folds(
    data: CocoDict, class_set: ClassSet, folds: list[Fold], out_dir: Path, seed: int
) -> dict[str, Any]:
    """Write fold_K/{train,val,test}.json and a manifest listing classes missing from a fold."""
    manifest: dict[str, Any] = {
        "folds": len(folds),
        "seed": seed,
        "classes": class_set.name,
        "source": fingerprint(data),
        "per_fold": [],
    }
    existing = out_dir / MANIFEST
    if existing.is_file():
        old = json.loads(existing.read_text())
        same = {k: old.get(k) for k in ("folds", "seed", "classes", "source")}
        if same != {k: manifest[k] for k in same}:
            raise SplitError(
                f"{out_dir} already holds folds made with {same}; this run asks for "
                f"{ {k: manifest[k] for k in same} }: choose another --out"
            )
    for fold in folds:
        entry: dict[str, Any] = {"fold": fold.index}
        for part in ("train", "val", "test"):
            ids = getattr(fold, part)
            write_json(subset(data, ids), out_dir / f"fold_{fold.index}" / f"{part}.json")
            counts = class_counts(data, class_set, ids)
            absent = [name for name, n in counts.items() if n == 0]
            entry[part] = {"images": len(ids), "boxes": counts, "absent_classes": absent}
            if absent and part == "test":
                logger.warning("fold %d: no test boxes of %s", fold.index, absent)
        manifest["per_fold"].append(entry)
    write_json(manifest, existing, indent=2)
    return manifest
