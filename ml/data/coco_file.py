"""COCO annotation files: read with the known TACO defects repaired, subset, and write."""

from __future__ import annotations

import contextlib
import copy
import io
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


def write_json(data: Any, path: Path, indent: int | None = None) -> Path:
    """Write atomically, so processes running folds side by side never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=indent))
    tmp.replace(path)
    return path


def to_pycocotools(data: CocoDict) -> Any:
    """A pycocotools COCO object built from a dict, without its prints on stdout."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
