"""Sliced inference for small litter: overlapping native-resolution tiles plus the whole photo.

At 800/1333 input a 12 MP photo is shrunk 3-4x, and most TACO boxes end up under the
smallest anchor (32 px). Tiles cut at native resolution are enlarged to the model's input
instead, so the same objects reach it 3-4x larger; the whole-photo pass keeps the large ones.
The detections of all passes are merged by class-wise NMS (`torchvision.ops.batched_nms`).

The tile grid is a few lines of arithmetic; sahi's slicer would bring opencv, shapely and
its own prediction wrappers for the same grid, so it is not used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.ops import batched_nms
from tqdm import tqdm

from ml.data import TacoDataset
from ml.detector import Detection, Detector

# What evaluation keeps per photo (COCO's maxDets) and the lowest score it looks at (the
# torchvision default box_score_thresh, which whole-photo evaluation uses too).
EVAL_MAX_DETECTIONS = 100
EVAL_SCORE_THRESHOLD = 0.05
# Overlapping tiles find the same object twice; beyond this IoU the weaker copy goes.
MERGE_IOU = 0.5
# The checkpoint key that carries a model's slice settings (written by training).
CHECKPOINT_KEY = "slicing"
DEFAULT_OVERLAP = 0.2


@dataclass(frozen=True)
class SliceOptions:
    """Tile side in original pixels (0: off), overlap as a share of it, tiles per model call."""

    size: int = 0
    overlap: float = DEFAULT_OVERLAP
    batch: int = 8

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"slice size must be >= 0 (0 is off), not {self.size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"slice overlap must be in [0, 1), not {self.overlap}")

    @property
    def enabled(self) -> bool:
        """Whether tiles are used at all."""
        return self.size > 0


def checkpoint_slicing(
    payload: Mapping[str, Any], size: int | None = None, overlap: float | None = None
) -> SliceOptions:
    """The slice settings a checkpoint carries, with an operator's `size`/`overlap` on top."""
    stored = payload.get(CHECKPOINT_KEY) or {}
    return SliceOptions(
        size=int(stored.get("size", 0)) if size is None else size,
        overlap=float(stored.get("overlap", DEFAULT_OVERLAP)) if overlap is None else overlap,
    )


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    count = math.ceil((length - size) / step) + 1
    # Spread evenly so the last tile ends exactly at the border.
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def tiles(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """x1, y1, x2, y2 of overlapping size x size tiles covering an image (clipped to it)."""
    step = max(1, int(size * (1.0 - overlap)))
    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in _starts(height, size, step)
        for x in _starts(width, size, step)
    ]


def merge(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-wise NMS over the detections of every pass; best first, at most `limit`."""
    keep = batched_nms(boxes, scores, labels, MERGE_IOU)
    if limit:
        keep = keep[:limit]
    return boxes[keep], scores[keep], labels[keep]


@torch.inference_mode()
def predict_sliced(
    detector: Detector,
    images: Sequence[torch.Tensor],
    options: SliceOptions,
    score_threshold: float | None = None,
    max_detections: int | None = 100,
) -> list[list[Detection]]:
    """Detections per CHW image (boxes in its pixels) from the whole photo and its tiles."""
    whole = detector.predict(list(images), score_threshold, None)
    if not options.enabled:
        return [found[:max_detections] if max_detections else found for found in whole]
    names = detector.info.class_names
    results = []
    for image, found in zip(images, whole, strict=True):
        boxes = [torch.tensor([d.box for d in found]).reshape(-1, 4)]
        scores = [torch.tensor([d.score for d in found])]
        labels = [torch.tensor([names.index(d.label) for d in found], dtype=torch.int64)]
        grid = tiles(int(image.shape[-2]), int(image.shape[-1]), options.size, options.overlap)
        for start in range(0, len(grid), options.batch):
            chunk = grid[start : start + options.batch]
            crops = [image[..., y1:y2, x1:x2] for x1, y1, x2, y2 in chunk]
            for (x1, y1, _, _), dets in zip(
                chunk, detector.predict(crops, score_threshold, None), strict=True
            ):
                offset = torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
                boxes.append(torch.tensor([d.box for d in dets]).reshape(-1, 4) + offset)
                scores.append(torch.tensor([d.score for d in dets]))
                labels.append(torch.tensor([names.index(d.label) for d in dets], dtype=torch.int64))
        kept = merge(torch.cat(boxes), torch.cat(scores), torch.cat(labels), max_detections)
        results.append(
            [
                Detection(names[label], score, (b[0], b[1], b[2], b[3]))
                for b, score, label in zip(
                    kept[0].tolist(), kept[1].tolist(), kept[2].tolist(), strict=True
                )
            ]
        )
    return results


def sliced_detections(
    detector: Detector, dataset: TacoDataset, options: SliceOptions, progress: bool = True
) -> list[dict[str, Any]]:
    """`engine.evaluate`'s output, from sliced inference on each full-size photo.

    `dataset` must have no transforms: tiles are cut from the photo's own pixels.
    """
    names = detector.info.class_names
    results = []
    for index in tqdm(range(len(dataset)), desc="eval (sliced)", disable=not progress):
        image, target = dataset[index]
        (found,) = predict_sliced(
            detector,
            [image.as_subclass(torch.Tensor)],
            options,
            EVAL_SCORE_THRESHOLD,
            EVAL_MAX_DETECTIONS,
        )
        results.append(
            {
                "image_id": target["image_id"],
                "boxes": [list(d.box) for d in found],
                "scores": [d.score for d in found],
                "labels": [names.index(d.label) + 1 for d in found],
            }
        )
    return results
