"""Detector metrics: mAP@[.5:.95], mAP50, mAP75, by size at the model's input, per class, and
class-agnostic (`litter`).

The COCOeval wrapper itself is the core's (`trashmap.scoring`, torch-free, which also scores
model versions on verified photos); this module adds what only a trained detector needs:
engine output as COCO results, box sizes at the model's input scale, and the litter AP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ml.data.coco_file import CocoDict
from trashmap.scoring import SUMMARY_KEYS, best_f1, per_class_ap, run_cocoeval, summary

logger = logging.getLogger(__name__)

__all__ = ["SUMMARY_KEYS", "coco_metrics", "format_metrics", "resize_scale", "size_class"]

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


def as_litter(
    ground_truth: CocoDict, results: list[dict[str, Any]]
) -> tuple[CocoDict, list[dict[str, Any]]]:
    """Ground truth and results with every class merged into one, `litter` (id 1).

    The categories are remapped rather than COCOeval's `useCats=0`, so the litter AP comes
    from the very evaluation the per-class AP does (size buckets, crowd regions), with one
    class in its precision array. A wrong class on the right box counts as a hit; two
    classes on one object (one hit, one false positive) still cost; maxDets (100) now
    caps an image's detections of all classes together, as the detector itself does.
    """
    merged = {
        **ground_truth,
        "annotations": [{**a, "category_id": 1} for a in ground_truth["annotations"]],
        "categories": [{"id": 1, "name": "litter"}],
    }
    return merged, [{**r, "category_id": 1} for r in results]


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
    `boxes_per_class` counts the ground-truth boxes (not crowd regions) behind each AP.
    `litter` holds the same summary with every class merged into one (`as_litter`), and
    `best_f1` the score threshold with the best F1 at IoU 0.5.
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
    real_labels = [a["category_id"] for a in ground_truth["annotations"] if not a.get("iscrowd")]
    metrics: Metrics = {
        "images": len(ground_truth["images"]),
        "annotations": len(real_labels),
        "boxes_per_class": {n: real_labels.count(i + 1) for i, n in enumerate(class_names)},
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
        zeros = {n: (0.0 if i + 1 in real_labels else None) for i, n in enumerate(class_names)}
        litter = {key: metrics[key] for key in SUMMARY_KEYS}
        return {
            **metrics,
            "per_class": zeros,
            "per_class_ap50": dict(zeros),
            "litter": litter,
            "best_f1": None,
        }
    gt_at_input = _at_input_scale(ground_truth, scales)
    evaluator = run_cocoeval(gt_at_input, results, labels, scales)
    metrics |= summary(evaluator, SUMMARY_KEYS)
    metrics |= summary(run_cocoeval(ground_truth, results, labels), ORIGINAL_KEYS)
    metrics["per_class"], metrics["per_class_ap50"] = per_class_ap(evaluator, class_names)
    metrics["litter"] = summary(run_cocoeval(*as_litter(gt_at_input, results), [1], scales))
    metrics["best_f1"] = best_f1(evaluator)
    return metrics


def format_metrics(metrics: Metrics) -> str:
    """One line with the headline numbers."""
    parts = []
    for key in SUMMARY_KEYS:
        value = metrics.get(key)
        parts.append(f"{key}={'n/a' if value is None else f'{value:.4f}'}")
    return " ".join(parts)
