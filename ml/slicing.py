"""Sliced inference for small litter: overlapping native-resolution tiles plus the whole photo.

At 800/1333 input a 12 MP photo is shrunk 3-4x, and most TACO boxes end up under the
smallest anchor (32 px). Tiles cut at native resolution are enlarged to the model's input
instead, so the same objects reach it 3-4x larger; the whole-photo pass keeps the large ones.
The detections of all passes are merged by class-wise NMS (`torchvision.ops.batched_nms`).

The one tiling and merging code: `trashmap ml evaluate` / `predict` call `predict_sliced`
directly, the workers through `ml.inference.BatchPredictor` (which hands it its own batched,
mixed-precision model call). The tile grid is a few lines of arithmetic; sahi's slicer would
bring opencv, shapely and its own prediction wrappers for the same grid, so it is not used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torchvision.ops import batched_nms
from tqdm import tqdm

from ml.detector import Detection, Detector
from trashmap.settings import MAX_SLICE_OVERLAP

if TYPE_CHECKING:
    # Evaluation only; the workers import this module and need no dataset code.
    from ml.data import TacoDataset

# What evaluation keeps per photo (COCO's maxDets) and the lowest score it looks at (the
# torchvision default box_score_thresh, which whole-photo evaluation uses too).
EVAL_MAX_DETECTIONS = 100
EVAL_SCORE_THRESHOLD = 0.05
# Overlapping tiles find the same object twice; beyond this IoU the weaker copy goes.
MERGE_IOU = 0.5
# The checkpoint key that carries a model's slice settings (written by training).
CHECKPOINT_KEY = "slicing"
DEFAULT_OVERLAP = 0.2

Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class SliceOptions:
    """Tile side in original pixels (0: off), overlap as a share of it, tiles per model call."""

    size: int = 0
    overlap: float = DEFAULT_OVERLAP
    batch: int = 8

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"slice size must be >= 0 (0 is off), not {self.size}")
        if not 0.0 <= self.overlap <= MAX_SLICE_OVERLAP:
            raise ValueError(
                f"slice overlap must be in [0, {MAX_SLICE_OVERLAP}], not {self.overlap}"
            )

    @property
    def enabled(self) -> bool:
        """Whether tiles are used at all."""
        return self.size > 0

    def describe(self) -> str:
        """For log lines: 'off' or '512 px tiles, overlap 0.2'."""
        return f"{self.size} px tiles, overlap {self.overlap:g}" if self.enabled else "off"

    def to_dict(self) -> dict[str, Any]:
        """As a checkpoint stores it (ModelInfo.slicing, the "slicing" key)."""
        return {"size": self.size, "overlap": self.overlap}


def stored_slicing(
    stored: Mapping[str, Any] | None, size: int | None = None, overlap: float | None = None
) -> SliceOptions:
    """Slice settings as a checkpoint stores them, with an operator's `size`/`overlap` on top."""
    stored = stored or {}
    return SliceOptions(
        size=int(stored.get("size", 0)) if size is None else size,
        overlap=float(stored.get("overlap", DEFAULT_OVERLAP)) if overlap is None else overlap,
    )


def checkpoint_slicing(
    payload: Mapping[str, Any], size: int | None = None, overlap: float | None = None
) -> SliceOptions:
    """The slice settings a checkpoint carries, with an operator's `size`/`overlap` on top."""
    return stored_slicing(payload.get(CHECKPOINT_KEY), size, overlap)


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    count = math.ceil((length - size) / step) + 1
    # Spread evenly so the last tile ends exactly at the border.
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def tiles(height: int, width: int, size: int, overlap: float) -> list[Region]:
    """x1, y1, x2, y2 of overlapping size x size tiles covering an image (clipped to it)."""
    step = max(1, int(size * (1.0 - overlap)))
    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in _starts(height, size, step)
        for x in _starts(width, size, step)
    ]


def regions(height: int, width: int, options: SliceOptions) -> list[Region]:
    """What the model runs on: the whole image first, then its tiles (none when off, or when
    one tile would be the whole image again)."""
    whole = (0, 0, width, height)
    if not options.enabled:
        return [whole]
    grid = tiles(height, width, options.size, options.overlap)
    return [whole] if grid == [whole] else [whole, *grid]


def merge(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class-wise NMS over the detections of every pass; best first, at most `limit`."""
    keep = batched_nms(boxes, scores, labels, MERGE_IOU)
    if limit:
        keep = keep[:limit]
    return boxes[keep], scores[keep], labels[keep]


class Predict(Protocol):
    """A model call on images of mixed shapes; must batch only images of one padded shape."""

    def __call__(
        self,
        images: Sequence[torch.Tensor],
        score_threshold: float | None,
        max_detections: int | None,
    ) -> list[list[Detection]]: ...


def _in_runs(detector: Detector, batch: int) -> Predict:
    """`detector.predict` on each run of consecutive equal-shape images, `batch` at a time.

    A photo's tiles share one shape (see `tiles`), so they batch without any padding.
    """

    def predict(
        images: Sequence[torch.Tensor], score_threshold: float | None, max_detections: int | None
    ) -> list[list[Detection]]:
        found: list[list[Detection]] = []
        for _, run in itertools.groupby(images, key=lambda image: tuple(image.shape)):
            same = list(run)
            for start in range(0, len(same), max(1, batch)):
                chunk = same[start : start + batch]
                found += detector.predict(chunk, score_threshold, max_detections)
        return found

    return predict


def _merged(
    found: Sequence[list[Detection]],
    offsets: Sequence[Region],
    names: Sequence[str],
    limit: int | None,
) -> list[Detection]:
    """One photo's detections from all its regions, in its own pixels, duplicates merged."""
    boxes, scores, labels = [], [], []
    for (x1, y1, _, _), dets in zip(offsets, found, strict=True):
        shift = torch.tensor([x1, y1, x1, y1], dtype=torch.float32)
        boxes.append(
            torch.tensor([d.box for d in dets], dtype=torch.float32).reshape(-1, 4) + shift
        )
        scores.append(torch.tensor([d.score for d in dets], dtype=torch.float32))
        labels.append(torch.tensor([names.index(d.label) for d in dets], dtype=torch.int64))
    kept = merge(torch.cat(boxes), torch.cat(scores), torch.cat(labels), limit)
    return [
        Detection(names[label], score, (b[0], b[1], b[2], b[3]))
        for b, score, label in zip(
            kept[0].tolist(), kept[1].tolist(), kept[2].tolist(), strict=True
        )
    ]


@torch.inference_mode()
def predict_sliced(
    detector: Detector,
    images: Sequence[torch.Tensor],
    options: SliceOptions,
    score_threshold: float | None = None,
    max_detections: int | None = 100,
    *,
    predict: Predict | None = None,
) -> list[list[Detection]]:
    """Detections per CHW image (boxes in its pixels) from the whole photo and its tiles.

    Every region of every image goes to one `predict` call: the workers' shape-grouped
    batches, or by default `detector.predict` on each run of equal shapes. A photo's result
    depends on its own regions only, so a batch of photos finds what each finds alone.
    """
    run = predict or _in_runs(detector, options.batch)
    layout = [regions(int(image.shape[-2]), int(image.shape[-1]), options) for image in images]
    crops = [
        image[..., y1:y2, x1:x2]
        for image, boxes in zip(images, layout, strict=True)
        for x1, y1, x2, y2 in boxes
    ]
    found = run(crops, score_threshold, None)
    results = []
    start = 0
    for boxes in layout:
        own = found[start : start + len(boxes)]
        start += len(boxes)
        if len(boxes) == 1:  # the whole photo alone: nothing to shift or merge
            results.append(own[0][:max_detections] if max_detections else own[0])
        else:
            results.append(_merged(own, boxes, detector.info.class_names, max_detections))
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
