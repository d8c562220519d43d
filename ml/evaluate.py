"""`trashmap ml evaluate`: COCO box metrics of a checkpoint on an annotated split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.categories import ClassSet, load_class_set
from ml.coco_eval import coco_metrics, format_metrics
from ml.data import TacoDataset
from ml.data.coco_file import read_coco, write_json
from ml.detector import Detector, read_checkpoint
from ml.engine import evaluate
from ml.recipe import eval_loader
from ml.slicing import checkpoint_slicing, sliced_detections
from ml.transforms import eval_transforms

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateOptions:
    """A checkpoint, the split to score it on, and where to write the metrics."""

    weights: Path
    annotations: Path
    images: Path
    out: Path | None = None
    classes: str | None = None
    device: str = "auto"
    batch_size: int = 4
    workers: int = 2
    slice_size: int | None = None  # None: the checkpoint's setting
    slice_overlap: float | None = None
    progress: bool = True


def checkpoint_class_set(
    payload: dict[str, Any], categories: list[dict[str, Any]], override: str | None
) -> ClassSet:
    """The class set a checkpoint was trained with, so the split maps onto the same labels."""
    if override:
        class_set = load_class_set(override, categories)
    elif "class_set" in payload:
        class_set = ClassSet.from_dict(payload["class_set"], source="checkpoint")
    else:
        # An older or hand-made checkpoint: match categories by the class names it lists.
        class_set = ClassSet(name="checkpoint", classes=tuple(payload["class_names"]))
    if tuple(class_set.classes) != tuple(payload["class_names"]):
        raise ValueError(
            f"class set {class_set.name} lists {list(class_set.classes)} but the checkpoint "
            f"predicts {payload['class_names']}"
        )
    return class_set


def main(options: EvaluateOptions) -> dict[str, Any]:
    """Score the checkpoint exactly as the worker loads it; returns the metrics dict."""
    info, payload = read_checkpoint(options.weights)
    data = read_coco(options.annotations)
    class_set = checkpoint_class_set(payload, data["categories"], options.classes)
    detector = Detector.from_checkpoint(options.weights, options.device)
    # Categories outside the scored classes (a trained catch-all included) are ignore regions.
    scored = class_set.scored()
    dataset = TacoDataset(
        data, options.images, scored, eval_transforms(info.min_size, info.max_size)
    )
    slicing = checkpoint_slicing(payload, options.slice_size, options.slice_overlap)
    if slicing.enabled:
        full_size = TacoDataset(data, options.images, scored)
        detections = sliced_detections(detector, full_size, slicing, options.progress)
    else:
        loader = eval_loader(dataset, options.batch_size, options.workers)
        amp = detector.device.type == "cuda"
        detections = evaluate(
            detector.model, loader, detector.device, amp=amp, progress=options.progress
        )
    metrics = coco_metrics(
        dataset.ground_truth(),
        detections,
        scored.classes,
        input_size=(info.min_size, info.max_size),
    )
    metrics["checkpoint"] = {
        "path": str(options.weights),
        "sha256": detector.weights_sha256,
        "name": info.name,
        "version": info.version,
        "arch": info.arch,
    }
    metrics["split"] = str(options.annotations)
    metrics["slice"] = {"size": slicing.size, "overlap": slicing.overlap}
    logger.info("%s on %s: %s", options.weights, options.annotations, format_metrics(metrics))
    if options.out is not None:
        write_json(metrics, options.out, indent=2)
    return metrics
