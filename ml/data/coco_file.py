"""COCO annotation files: read with the known TACO defects repaired, subset, and write."""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CocoDict = dict[str, Any]


class AnnotationFileError(ValueError):
    """An annotation file is missing or is not usable COCO."""


def read_coco(path: Path) -> CocoDict:
    """Load a COCO file and repair what would corrupt pycocotools' indexes."""
    if not path.is_file():
        raise AnnotationFileError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationFileError(f"{path} lacks the COCO list {key!r}")
    return repair_ids(data, source=str(path))


def repair_ids(data: CocoDict, source: str = "annotations") -> CocoDict:
    """Give duplicated annotation ids fresh numbers (in a copy) and drop dangling annotations.

    pycocotools indexes annotations by id, so the official TACO file's two reused ids would
    silently lose two boxes and return two others twice.
    """
    counts = Counter(a["id"] for a in data["annotations"])
    image_ids = {img["id"] for img in data["images"]}
    dangling = [a for a in data["annotations"] if a["image_id"] not in image_ids]
    if not any(n > 1 for n in counts.values()) and not dangling:
        return data
    data = copy.copy(data)
    next_id = max(counts, default=0) + 1
    seen: set[int] = set()
    repaired = []
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            continue
        if ann["id"] in seen:
            logger.warning(
                "%s: annotation id %s is used twice; the one on image %s becomes id %s",
                source,
                ann["id"],
                ann["image_id"],
                next_id,
            )
            ann = {**ann, "id": next_id}
            next_id += 1
        seen.add(ann["id"])
        repaired.append(ann)
    if dangling:
        logger.warning("%s: dropped %d annotations of unknown images", source, len(dangling))
    data["annotations"] = repaired
    return data


def subset(data: CocoDict, image_ids: Iterable[int]) -> CocoDict:
    """The same file restricted to `image_ids` (categories and other keys kept)."""
    keep = set(image_ids)
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [img for img in data["images"] if img["id"] in keep]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return out


def merge(base: CocoDict, extra: CocoDict, extra_root: Path) -> CocoDict:
    """`extra`'s images and boxes added to `base`'s, each image kept whole (so folds and
    holdouts, which split by image, never split one photo).

    Categories are matched by name: an extra category that `base` has takes its id, a new
    one is appended (a class set then maps both files' names alike). Extra images get fresh
    ids and absolute file names under `extra_root`, so one images folder serves both.
    """
    categories = [dict(c) for c in base["categories"]]
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    next_category = max(by_name.values(), default=0) + 1
    category_of: dict[int, int] = {}
    for category in extra["categories"]:
        name = str(category["name"])
        if name not in by_name:
            by_name[name] = next_category
            categories.append({**category, "id": next_category})
            next_category += 1
        category_of[int(category["id"])] = by_name[name]
    image_offset = max((int(i["id"]) for i in base["images"]), default=0)
    ann_offset = max((int(a["id"]) for a in base["annotations"]), default=0)
    images = list(base["images"]) + [
        {
            **image,
            "id": int(image["id"]) + image_offset,
            "file_name": str((extra_root / image["file_name"]).resolve()),
        }
        for image in extra["images"]
    ]
    annotations = list(base["annotations"]) + [
        {
            **ann,
            "id": int(ann["id"]) + ann_offset,
            "image_id": int(ann["image_id"]) + image_offset,
            "category_id": category_of[int(ann["category_id"])],
        }
        for ann in extra["annotations"]
        if int(ann["category_id"]) in category_of
    ]
    logger.info(
        "merged %d extra images (%d boxes) into %d",
        len(extra["images"]),
        len(extra["annotations"]),
        len(base["images"]),
    )
    return {**base, "images": images, "annotations": annotations, "categories": categories}


def read_training_coco(annotations: Path, extra: Path | None = None) -> CocoDict:
    """The training file, with `extra` merged in when given (its file names are relative to
    its own folder, as `trashmap dataset export` writes them)."""
    data = read_coco(annotations)
    if extra is None:
        return data
    return merge(data, read_coco(extra), extra.parent)


def write_json(data: Any, path: Path, indent: int | None = None) -> Path:
    """Write atomically, so processes running folds side by side never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    tmp.replace(path)
    return path


def to_pycocotools(data: CocoDict) -> Any:
    """A pycocotools COCO object built from a dict, without its prints on stdout."""
    from trashmap.scoring import coco_index

    return coco_index(data)
