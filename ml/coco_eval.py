"""COCO box metrics with pycocotools: mAP@[.5:.95], mAP50, mAP75, by size, and per class."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ml.data.coco_file import CocoDict, to_pycocotools

logger = logging.getLogger(__name__)

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
Metrics = dict[str, Any]
# COCO's size ranges, in pixels of box area.
_SMALL, _MEDIUM = 32**2, 96**2


def _defined(value: float) -> float | None:
    # COCOeval writes -1 where no ground truth exists (e.g. no small boxes): undefined, not 0.
    return None if value < 0 else float(value)


def to_results(detections: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """engine.evaluate output -> COCO result rows (xywh boxes, category = label)."""
    rows = []
    for det in detections:
        for (x1, y1, x2, y2), score, label in zip(
            det["boxes"], det["scores"], det["labels"], strict=True
        ):
            rows.append(
                {
                    "image_id": det["image_id"],
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return rows


def coco_metrics(
    ground_truth: CocoDict, detections: Sequence[dict[str, Any]], class_names: Sequence[str]
) -> Metrics:
    """Evaluate detections against ground truth whose category ids are labels 1..N."""
    if not ground_truth["images"]:
        raise ValueError("cannot evaluate on a split without images")
    from pycocotools.cocoeval import COCOeval

    gt = to_pycocotools(ground_truth)
    results = to_results(detections)
    gt_labels = {a["category_id"] for a in ground_truth["annotations"]}
    metrics: Metrics = {
        "images": len(ground_truth["images"]),
        "annotations": len(ground_truth["annotations"]),
        "detections": len(results),
    }
    if not results:
        # pycocotools cannot load an empty result list; nothing detected scores 0 everywhere
        # there is something to detect.
        logger.warning("no detections at all: every metric is 0")
        areas = [a["area"] for a in ground_truth["annotations"] if not a.get("iscrowd")]
        present = {
            "map_small": any(a < _SMALL for a in areas),
            "map_medium": any(_SMALL <= a < _MEDIUM for a in areas),
            "map_large": any(a >= _MEDIUM for a in areas),
        }
        for key in SUMMARY_KEYS:
            metrics[key] = 0.0 if areas and present.get(key, True) else None
        zeros = {n: (0.0 if i + 1 in gt_labels else None) for i, n in enumerate(class_names)}
        return {**metrics, "per_class": zeros, "per_class_ap50": dict(zeros)}
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = list(range(1, len(class_names) + 1))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("COCOeval summary:\n%s", buffer.getvalue())
    for key, index in SUMMARY_KEYS.items():
        metrics[key] = _defined(float(evaluator.stats[index]))
    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]
    precision = evaluator.eval["precision"]
    per_class: dict[str, float | None] = {}
    per_class_ap50: dict[str, float | None] = {}
    for k, name in enumerate(class_names):
        every_iou = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        per_class[name] = _mean_defined(every_iou)
        per_class_ap50[name] = _mean_defined(at_50)
    metrics["per_class"] = per_class
    metrics["per_class_ap50"] = per_class_ap50
    return metrics


def _mean_defined(values: np.ndarray) -> float | None:
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def format_metrics(metrics: Metrics) -> str:
    """One line with the headline numbers."""
    parts = []
    for key in SUMMARY_KEYS:
        value = metrics.get(key)
        parts.append(f"{key}={'n/a' if value is None else f'{value:.4f}'}")
    return " ".join(parts)
