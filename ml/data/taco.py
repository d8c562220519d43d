"""The TACO / COCO detection dataset: every annotation of an image, upright, in a class set."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ml.categories import ClassSet
from ml.data.coco_file import CocoDict, read_coco, repair_ids, to_pycocotools
from ml.images import check_size, open_oriented

logger = logging.getLogger(__name__)

Target = dict[str, Any]
Transform = Callable[[tv_tensors.Image, Target], tuple[torch.Tensor, Target]]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its usable boxes, in the annotation's (upright) pixel coordinates."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: torch.Tensor  # (N, 4) float32, x1 y1 x2 y2, clipped to the image
    labels: torch.Tensor  # (N,) int64, 1-based class-set labels
    areas: torch.Tensor  # (N,) float32, the file's area (segment area for TACO)
    iscrowd: torch.Tensor  # (N,) int64
    # (M, 4) boxes of categories outside the class set: ignore regions when scoring.
    outside: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4)))


@dataclass
class BoxReport:
    """What converting an annotation file's boxes kept and dropped."""

    kept: int = 0
    clipped: int = 0
    degenerate: int = 0
    not_in_class_set: int = 0


def convert_boxes(
    annotations: Iterable[Mapping[str, Any]],
    width: int,
    height: int,
    category_labels: Mapping[int, int],
    report: BoxReport,
    min_size: float = 1.0,
    outside: list[tuple[float, float, float, float]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """COCO xywh -> clipped xyxy with labels; the only place boxes are converted or dropped.

    Boxes of categories outside the class set are appended to `outside` when it is given.
    """
    boxes, labels, areas, crowd = [], [], [], []
    for ann in annotations:
        label = category_labels.get(int(ann["category_id"]))
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            report.degenerate += 1  # a NaN box would turn the whole batch's loss into NaN
            continue
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if label is None:
            report.not_in_class_set += 1
            if outside is not None and x2 > x1 and y2 > y1:
                outside.append((x1, y1, x2, y2))
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            report.clipped += 1  # TACO has boxes starting at -1 px
        if x2 - x1 < min_size or y2 - y1 < min_size:
            report.degenerate += 1
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(label)
        areas.append(float(ann.get("area") or (x2 - x1) * (y2 - y1)))
        crowd.append(int(ann.get("iscrowd", 0)))
        report.kept += 1
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels, dtype=torch.int64),
        torch.tensor(areas, dtype=torch.float32),
        torch.tensor(crowd, dtype=torch.int64),
    )


class TacoDataset(torch.utils.data.Dataset):
    """COCO-format detection data: (image, target) with all boxes of the image.

    Images without any box of the class set stay in as negatives unless `keep_empty` is False.
    Boxes of categories outside the set are kept as `ImageRecord.outside`, ignore regions in
    `ground_truth`; `drop_outside` leaves out every image holding one, so that litter outside
    the set is never trained as background. `transforms` receive a uint8 tv_tensors.Image and
    a target whose "boxes" are tv_tensors.BoundingBoxes, so geometry moves boxes with pixels.
    """

    def __init__(
        self,
        annotations: Path | CocoDict,
        images_dir: Path | None,
        class_set: ClassSet,
        transforms: Transform | None = None,
        *,
        image_ids: Sequence[int] | None = None,
        keep_empty: bool = True,
        min_box_size: float = 1.0,
        drop_outside: bool = False,
    ) -> None:
        data = read_coco(annotations) if isinstance(annotations, Path) else repair_ids(annotations)
        self.source = str(annotations) if isinstance(annotations, Path) else "annotations"
        coco = to_pycocotools(data)
        self.images_dir = images_dir
        self.class_set = class_set
        self.transforms = transforms
        self.report = BoxReport()
        self.dropped_outside = 0
        category_labels = class_set.category_labels(data["categories"])
        ids = list(image_ids) if image_ids is not None else sorted(coco.getImgIds())
        self.records: list[ImageRecord] = []
        for image_id in ids:
            info = coco.loadImgs(image_id)[0]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            outside: list[tuple[float, float, float, float]] = []
            boxes, labels, areas, crowd = convert_boxes(
                anns,
                info["width"],
                info["height"],
                category_labels,
                self.report,
                min_box_size,
                outside,
            )
            if outside and drop_outside:
                self.dropped_outside += 1
                continue
            if len(boxes) == 0 and not outside and not keep_empty:
                continue
            self.records.append(
                ImageRecord(
                    image_id,
                    info["file_name"],
                    info["width"],
                    info["height"],
                    boxes,
                    labels,
                    areas,
                    crowd,
                    torch.tensor(outside, dtype=torch.float32).reshape(-1, 4),
                )
            )
        logger.info(
            "%s: %d images, %d boxes kept, %d clipped, %d degenerate, %d outside class set %s",
            self.source,
            len(self.records),
            self.report.kept,
            self.report.clipped,
            self.report.degenerate,
            self.report.not_in_class_set,
            class_set.name,
        )
        if self.dropped_outside:
            logger.info(
                "%s: left out %d images holding boxes outside class set %s",
                self.source,
                self.dropped_outside,
                class_set.name,
            )

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, index: int) -> Path:
        """Where the image file of record `index` lives."""
        if self.images_dir is None:
            raise ValueError(f"{self.source}: no images folder was given")
        return self.images_dir / self.records[index].file_name

    def load_image(self, index: int) -> Image.Image:
        """The upright RGB image, checked against its annotation's size."""
        record = self.records[index]
        path = self.image_path(index)
        image = open_oriented(path)
        check_size(image, record.width, record.height, path)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        record = self.records[index]
        image = tv_tensors.Image(torch.from_numpy(_pixels(self.load_image(index))))
        # Faster R-CNN has no notion of crowd regions; they only count in COCOeval.
        single = record.iscrowd == 0
        target: Target = {
            "boxes": tv_tensors.BoundingBoxes(
                record.boxes[single].clone(),
                format=tv_tensors.BoundingBoxFormat.XYXY,
                canvas_size=(record.height, record.width),
            ),
            "labels": record.labels[single].clone(),
            "image_id": record.image_id,
            "orig_size": (record.height, record.width),
        }
        if self.transforms is not None:
            return self.transforms(image, target)
        return image, target

    def aspect_groups(self) -> list[int]:
        """0 for portrait, 1 for landscape images; batches mix only one kind."""
        return [int(r.width >= r.height) for r in self.records]

    def size_groups(self) -> list[int]:
        """One group per image size: evaluation batches hold only equal sizes, so no image
        is padded to another's shape and results do not depend on the batch size."""
        sizes: dict[tuple[int, int], int] = {}
        return [sizes.setdefault((r.width, r.height), len(sizes)) for r in self.records]

    def ground_truth(self) -> CocoDict:
        """These images and boxes as COCO in class-set labels, for COCOeval."""
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for r in self.records:
            images.append(
                {"id": r.image_id, "width": r.width, "height": r.height, "file_name": r.file_name}
            )
            for box, label, area, crowd in zip(
                r.boxes.tolist(),
                r.labels.tolist(),
                r.areas.tolist(),
                r.iscrowd.tolist(),
                strict=True,
            ):
                x1, y1, x2, y2 = box
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": r.image_id,
                        "category_id": label,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": area,
                        "iscrowd": crowd,
                    }
                )
            # Litter of other categories: a detection there is neither right nor wrong.
            for x1, y1, x2, y2 in r.outside.tolist():
                for label in range(1, len(self.class_set.classes) + 1):
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": r.image_id,
                            "category_id": label,
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": (x2 - x1) * (y2 - y1),
                            "iscrowd": 1,
                        }
                    )
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(self.class_set.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


def _pixels(image: Image.Image) -> np.ndarray:
    """HWC uint8 array -> CHW, the layout tv_tensors.Image expects."""
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def collate(
    batch: Sequence[tuple[torch.Tensor, Target]],
) -> tuple[list[torch.Tensor], list[Target]]:
    """Detection batches are lists: images differ in size and in box count."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
