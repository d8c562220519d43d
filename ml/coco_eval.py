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
SMALL_AREA, MEDIUM_AREA = 32**2, 96**2
# The size buckets again, by the annotation file's own area (TACO: segment area) at the
# photo's original resolution, as COCO's reference evaluation defines them.
ORIGINAL_KEYS = {"map_small_original": 3, "map_medium_original": 4, "map_large_original": 5}


def resize_scale(width: int, height: int, min_size: int, max_size: int) -> float:
    """The factor Faster R-CNN's resize applies to an image of this size."""
    return min(min_size / min(width, height), max_size / max(width, height))


def size_class(area: float) -> str:
    """COCO's size bucket of a box area: small, medium or large."""
    return "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"


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


def _input_scales(ground_truth: CocoDict, input_size: tuple[int, int] | None) -> dict[int, float]:
    if input_size is None:
        return {img["id"]: 1.0 for img in ground_truth["images"]}
    return {
        img["id"]: resize_scale(img["width"], img["height"], *input_size)
        for img in ground_truth["images"]
    }


def _at_input_scale(ground_truth: CocoDict, scales: dict[int, float]) -> CocoDict:
    """The ground truth with each area replaced by its box area at the model's input scale."""
    annotations = [
        {**a, "area": a["bbox"][2] * a["bbox"][3] * scales[a["image_id"]] ** 2}
        for a in ground_truth["annotations"]
    ]
    return {**ground_truth, "annotations": annotations}


def _run_cocoeval(
    gt: Any, results: list[dict[str, Any]], labels: list[int], scales: dict[int, float] | None
) -> Any:
    from pycocotools.cocoeval import COCOeval

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        dt = gt.loadRes(results)
        if scales is not None:
            for ann in dt.anns.values():  # detections are sized like the ground truth
                ann["area"] = ann["bbox"][2] * ann["bbox"][3] * scales[ann["image_id"]] ** 2
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.catIds = labels
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    logger.debug("COCOeval summary:\n%s", buffer.getvalue())
    return evaluator


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


def coco_metrics(
    ground_truth: CocoDict,
    detections: Sequence[dict[str, Any]],
    class_names: Sequence[str],
    input_size: tuple[int, int] | None = None,
) -> Metrics:
    """Evaluate detections against ground truth whose category ids are labels 1..N.

    `input_size` (min side, max side) is the model's resize: `map_small`, `map_medium` and
    `map_large` then bucket boxes by their area as the model sees them; without it, by box
    area in the annotation's pixels. `*_original` buckets by the file's own `area` field.
    Detections of labels above N (a catch-all class trained but not scored) are left out.
    `best_f1` is the score threshold with the best F1 at IoU 0.5.
    """
    if not ground_truth["images"]:
        raise ValueError("cannot evaluate on a split without images")
    scales = _input_scales(ground_truth, input_size)
    labels = list(range(1, len(class_names) + 1))
    scored = [
        {
            **det,
            **{
                key: [
                    v
                    for v, label in zip(det[key], det["labels"], strict=True)
                    if label <= len(labels)
                ]
                for key in ("boxes", "scores", "labels")
            },
        }
        for det in detections
    ]
    results = to_results(scored)
    gt_labels = {a["category_id"] for a in ground_truth["annotations"] if not a.get("iscrowd")}
    metrics: Metrics = {
        "images": len(ground_truth["images"]),
        "annotations": sum(1 for a in ground_truth["annotations"] if not a.get("iscrowd")),
        "detections": len(results),
    }
    if not results:
        # pycocotools cannot load an empty result list; nothing detected scores 0 everywhere
        # there is something to detect.
        logger.warning("no detections at all: every metric is 0")
        real = [a for a in ground_truth["annotations"] if not a.get("iscrowd")]
        at_input = [a["bbox"][2] * a["bbox"][3] * scales[a["image_id"]] ** 2 for a in real]
        original = [float(a.get("area") or a["bbox"][2] * a["bbox"][3]) for a in real]
        present = {f"map_{size_class(a)}": True for a in at_input}
        present |= {f"map_{size_class(a)}_original": True for a in original}
        for key in (*SUMMARY_KEYS, *ORIGINAL_KEYS):
            sized = key.startswith(("map_small", "map_medium", "map_large"))
            metrics[key] = 0.0 if real and (present.get(key, False) or not sized) else None
        zeros = {n: (0.0 if i + 1 in gt_labels else None) for i, n in enumerate(class_names)}
        return {**metrics, "per_class": zeros, "per_class_ap50": dict(zeros), "best_f1": None}
    evaluator = _run_cocoeval(
        to_pycocotools(_at_input_scale(ground_truth, scales)), results, labels, scales
    )
    for key, index in SUMMARY_KEYS.items():
        metrics[key] = _defined(float(evaluator.stats[index]))
    original = _run_cocoeval(to_pycocotools(ground_truth), results, labels, None)
    for key, index in ORIGINAL_KEYS.items():
        metrics[key] = _defined(float(original.stats[index]))
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
    metrics["best_f1"] = best_f1(evaluator)
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
