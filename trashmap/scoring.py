"""COCO box evaluation with pycocotools, and model versions scored on verified photos.

Torch-free: the web (`GET /api/v1/models/compare`), `trashmap models compare` and ml/
(`ml.coco_eval`, which adds the model's input scale) all evaluate through `run_cocoeval`.

Ground truth of a comparison is each verified photo's current set (a no-litter photo is an
image without boxes); a version is scored on the verified photos that both compared
versions ran on. A version "ran on" a photo when it left detections on it or is the
version the photo shows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
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
# COCOeval.stats index of each summary metric (its 12-line printout, in order).
SUMMARY_KEYS = {
    "map": 0,
    "map50": 1,
    "map75": 2,
    "map_small": 3,
    "map_medium": 4,
    "map_large": 5,
    "mar100": 8,
}


def coco_index(data: Mapping[str, Any]) -> Any:
    """A pycocotools COCO object built from a dict, without its prints on stdout."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(
    ground_truth: Any,
    results: list[dict[str, Any]],
    category_ids: Sequence[int],
    area_scale: Mapping[int, float] | None = None,
) -> Any:
    """COCOeval (bbox) evaluated, accumulated and summarised over `category_ids`.

    `ground_truth` is a COCO dict or a `coco_index`; `results` are COCO result rows (xywh).
    `area_scale` (image id -> factor on box sides) sizes each detection as the ground
    truth's areas were sized, so the size buckets compare like with like.
    """
    from pycocotools.cocoeval import COCOeval

    gt = coco_index(ground_truth) if isinstance(ground_truth, Mapping) else ground_truth
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        dt = gt.loadRes(results)
        if area_scale is not None:
            for ann in dt.anns.values():
                ann["area"] = ann["bbox"][2] * ann["bbox"][3] * area_scale[ann["image_id"]] ** 2
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = list(category_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("COCOeval summary:\n%s", buffer.getvalue())
    return evaluator


def defined(value: float) -> float | None:
    """COCOeval's -1 (no ground truth to score against, e.g. no small boxes) as None."""
    return None if value < 0 else float(value)


def mean_defined(values: np.ndarray) -> float | None:
    """The mean of the entries COCOeval defined (not -1), or None when there are none."""
    kept = values[values > -1]
    return float(kept.mean()) if kept.size else None


def summary(evaluator: Any, keys: Mapping[str, int] = SUMMARY_KEYS) -> dict[str, float | None]:
    """The summary metrics `keys` (name -> index in COCOeval.stats) of an evaluation."""
    return {key: defined(float(evaluator.stats[index])) for key, index in keys.items()}


def per_class_ap(
    evaluator: Any, names: Sequence[str]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """AP@[.5:.95] and AP50 per class; `names` in the order of the evaluated category ids."""
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, max dets]
    every_iou = {n: mean_defined(precision[:, :, k, 0, -1]) for k, n in enumerate(names)}
    at_50 = {n: mean_defined(precision[0, :, k, 0, -1]) for k, n in enumerate(names)}
    return every_iou, at_50


def precision_at_50(evaluator: Any) -> list[float | None]:
    """Precision at IoU 0.5 over RECALL_POINTS, averaged over classes with ground truth."""
    return [mean_defined(row) for row in evaluator.eval["precision"][0, :, :, 0, -1]]


def best_f1(evaluator: Any) -> dict[str, float] | None:
    """The score threshold with the best F1 at IoU 0.5 over all classes, from COCOeval's matches.

    Crowd (ignore) regions count as neither hits nor misses, exactly as in the mAP.
    """
    scores: list[float] = []
    hits: list[bool] = []
    positives = 0
    everything = evaluator.params.areaRng[0]
    for entry in evaluator.evalImgs:
        if entry is None or entry["aRng"] != everything:
            continue
        positives += int(np.sum(np.asarray(entry["gtIgnore"]) == 0))
        matched, ignored = entry["dtMatches"][0], entry["dtIgnore"][0]
        for score, match, ignore in zip(entry["dtScores"], matched, ignored, strict=True):
            if not ignore:
                scores.append(float(score))
                hits.append(bool(match > 0))
    if not scores or positives == 0:
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = np.asarray(scores)[order]
    tp = np.cumsum(np.asarray(hits)[order])
    fp = np.arange(1, len(order) + 1) - tp
    # Only the last of equal scores is a threshold one can set.
    last = np.append(ranked[1:] != ranked[:-1], True)
    f1 = np.where(last, 2 * tp / (2 * tp + fp + (positives - tp)), -1.0)
    i = int(np.argmax(f1))
    return {
        "threshold": float(ranked[i]),
        "f1": float(f1[i]),
        "precision": float(tp[i] / (tp[i] + fp[i])),
        "recall": float(tp[i] / positives),
    }


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
    evaluator = run_cocoeval(ground_truth, results, list(category.values()))
    per_class, per_class_50 = per_class_ap(evaluator, names)
    scores = summary(evaluator, {"map": SUMMARY_KEYS["map"], "map50": SUMMARY_KEYS["map50"]})
    metrics = {**scores, "per_class_ap": per_class, "per_class_ap50": per_class_50}
    return metrics, precision_at_50(evaluator)


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
