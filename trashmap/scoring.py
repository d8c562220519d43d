"""Model versions scored on verified photos with pycocotools (torch-free: the web uses it too).

Ground truth is each verified photo's current set (a no-litter photo is an image without
boxes); a version is scored on the verified photos that both compared versions ran on. A
version "ran on" a photo when it left detections on it or is the version the photo shows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from trashmap.annotations import boxes_of, current_sets_query
from trashmap.models import Detection, ModelVersion, Photo

logger = logging.getLogger(__name__)

# Recall points of COCOeval's precision array (101 from 0 to 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


class ScoringError(ValueError):
    """The versions cannot be compared (unknown version, nothing in common)."""


@dataclass
class VersionScore:
    version: ModelVersion
    metrics: dict[str, Any]
    detections: int
    detections_by_label: dict[str, int]
    # Precision at IoU 0.5 over RECALL_POINTS, averaged over classes with ground truth.
    precision_at_50: list[float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.version.id,
            "name": self.version.name,
            "version": self.version.version,
            "untrained": self.version.untrained,
            "map": self.metrics["map"],
            "map50": self.metrics["map50"],
            "per_class_ap": self.metrics["per_class_ap"],
            "per_class_ap50": self.metrics["per_class_ap50"],
            "detections": self.detections,
            "detections_by_label": self.detections_by_label,
        }


def ran_on(session: Session, version_id: int) -> set[int]:
    """Photos the version processed (left detections on, or is shown on)."""
    d, p = Detection.__table__.c, Photo.__table__.c
    with_rows = session.scalars(sa.select(d.photo_id).where(d.model_version_id == version_id))
    shown = session.scalars(sa.select(p.id).where(p.model_version_id == version_id))
    return set(with_rows) | set(shown)


def compare(session: Session, a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    """Both versions' COCO metrics on the verified photos both ran on."""
    sets = {s.photo_id: s for s in session.scalars(current_sets_query())}
    photo_ids = sorted(set(sets) & ran_on(session, a.id) & ran_on(session, b.id))
    if not photo_ids:
        raise ScoringError(
            f"no verified photo was processed by both {a.label} and {b.label}; "
            "review photos, or run `trashmap reprocess --model V --verified`"
        )
    detections = {
        version.id: list(
            session.scalars(
                sa.select(Detection).where(
                    Detection.model_version_id == version.id, Detection.photo_id.in_(photo_ids)
                )
            )
        )
        for version in (a, b)
    }
    gt_labels = {box.label for pid in photo_ids for box in boxes_of(sets[pid])}
    det_labels = {det.label for dets in detections.values() for det in dets}
    names = sorted(gt_labels | det_labels)
    category = {name: i + 1 for i, name in enumerate(names)}
    photos = {p.id: p for p in session.scalars(sa.select(Photo).where(Photo.id.in_(photo_ids)))}
    ground_truth = _ground_truth(photo_ids, photos, sets, category)
    scores = []
    for version in (a, b):
        rows = detections[version.id]
        metrics, curve = score(ground_truth, rows, category)
        scores.append(
            VersionScore(
                version,
                metrics,
                len(rows),
                dict(sorted(Counter(r.label for r in rows).items())),
                curve,
            )
        )
    return {
        "photos": len(photo_ids),
        "no_litter_photos": sum(1 for pid in photo_ids if sets[pid].no_litter),
        "boxes": len(ground_truth["annotations"]),
        "boxes_by_label": dict(
            sorted(Counter(box.label for pid in photo_ids for box in boxes_of(sets[pid])).items())
        ),
        "versions": scores,
    }


def _ground_truth(
    photo_ids: list[int], photos: dict[int, Photo], sets: dict[int, Any], category: dict[str, int]
) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for pid in photo_ids:
        photo = photos[pid]
        images.append({"id": pid, "width": photo.width, "height": photo.height})
        for box in boxes_of(sets[pid]):
            w, h = box.x2 - box.x1, box.y2 - box.y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": pid,
                    "category_id": category[box.label],
                    "bbox": [box.x1, box.y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": n} for n, i in category.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def score(
    ground_truth: dict[str, Any], detections: list[Detection], category: dict[str, int]
) -> tuple[dict[str, Any], list[float | None]]:
    """COCO mAP@[.5:.95], mAP50 and per-class AP of `detections`, and the IoU-0.5 PR curve."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = list(category)
    gt_labels = {a["category_id"] for a in ground_truth["annotations"]}
    if not detections or not gt_labels:
        # pycocotools cannot load an empty result list; with nothing found (or nothing to
        # find) AP is 0 where there is ground truth and undefined where there is none.
        zeros = {n: (0.0 if category[n] in gt_labels else None) for n in names}
        headline = 0.0 if gt_labels else None
        metrics = {"map": headline, "map50": headline, "per_class_ap": zeros}
        return {**metrics, "per_class_ap50": dict(zeros)}, [0.0 if gt_labels else None] * len(
            RECALL_POINTS
        )
    results = [
        {
            "image_id": d.photo_id,
            "category_id": category[d.label],
            "bbox": [d.x1, d.y1, d.x2 - d.x1, d.y2 - d.y1],
            "score": float(d.score),
        }
        for d in detections
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = list(category.values())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, max dets]
    per_class = {n: _mean_defined(precision[:, :, k, 0, -1]) for k, n in enumerate(names)}
    per_class_50 = {n: _mean_defined(precision[0, :, k, 0, -1]) for k, n in enumerate(names)}
    at_50 = precision[0, :, :, 0, -1]  # [recall, class]
    curve = [_mean_defined(row) for row in at_50]
    metrics = {
        "map": _defined(float(evaluator.stats[0])),
        "map50": _defined(float(evaluator.stats[1])),
        "per_class_ap": per_class,
        "per_class_ap50": per_class_50,
    }
    return metrics, curve


def _defined(value: float) -> float | None:
    return None if value < 0 else value  # COCOeval's -1: no ground truth to score against


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def compare_json(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "versions": [v.to_json() for v in result["versions"]]}


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a plain-text table: headline metrics, then AP per class."""
    a, b = result["versions"]
    lines = [
        f"{result['photos']} verified photos ({result['no_litter_photos']} no litter), "
        f"{result['boxes']} boxes",
        f"{'':24} {a.version.label[:22]:>22} {b.version.label[:22]:>22}",
    ]

    def cell(value: float | None) -> str:
        return f"{'n/a' if value is None else f'{value:.4f}':>22}"

    lines.append(f"{'mAP':24} {cell(a.metrics['map'])} {cell(b.metrics['map'])}")
    lines.append(f"{'mAP50':24} {cell(a.metrics['map50'])} {cell(b.metrics['map50'])}")
    lines.append(f"{'detections':24} {a.detections:>22} {b.detections:>22}")
    for name in a.metrics["per_class_ap"]:
        lines.append(
            f"{'AP ' + name[:21]:24} {cell(a.metrics['per_class_ap'][name])}"
            f" {cell(b.metrics['per_class_ap'][name])}"
        )
    return "\n".join(lines)


def plot_pr(result: dict[str, Any], path: str) -> None:
    """Precision-recall at IoU 0.5 (averaged over classes) of each version, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for v in result["versions"]:
        points = [
            (r, p) for r, p in zip(RECALL_POINTS, v.precision_at_50, strict=True) if p is not None
        ]
        if points:
            axes.plot([r for r, _ in points], [p for _, p in points], label=v.version.label)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision (IoU 0.5, mean over classes)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{result['photos']} verified photos")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
