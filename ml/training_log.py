"""What a training run records per epoch: CSV row, learning curve, TensorBoard, images."""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ml.explore_plots import learning_curve
from ml.visualize import GROUND_TRUTH, draw_boxes, shrink

logger = logging.getLogger(__name__)

_HEADLINE = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar100")
LEARNING_CURVE = "learning_curve.png"


class TrainingLog:
    """Appends to out/log.csv and tensorboard/, draws learning_curve.png; safe to reopen."""

    def __init__(self, out: Path, tensorboard: bool = True) -> None:
        self.out = out
        self.csv_path = out / "log.csv"
        self._writer: Any = None
        if tensorboard:
            # Imported here: TensorBoard is slow to import and only training needs it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    def epoch(self, epoch: int, values: Mapping[str, float | None]) -> None:
        """Record one epoch's numbers under their names (train/..., val/..., perf/...)."""
        row = {"epoch": epoch, **{k: ("" if v is None else v) for k, v in values.items()}}
        fields = list(row)
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            fields = header + [f for f in fields if f not in header]
            if fields != header:  # a new column (e.g. a loss first seen): rewrite with it
                with open(self.csv_path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
                self._write(fields, rows)
        else:
            self._write(fields, [])
        with open(self.csv_path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=fields).writerow(row)
        if self._writer is not None:
            for key, value in values.items():
                if value is not None:
                    self._writer.add_scalar(key, value, epoch)
            self._writer.flush()

    def _write(self, fields: list[str], rows: list[dict[str, Any]]) -> None:
        with open(self.csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def images(
        self,
        epoch: int,
        samples: list[tuple[int, Image.Image, list[list[float]], list[list[float]], list[str]]],
    ) -> Path:
        """Save (image id, image, ground-truth boxes, predicted boxes, captions) drawings."""
        folder = self.out / "val_images" / f"epoch_{epoch:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for image_id, image, truth, boxes, captions in samples:
            drawn = draw_boxes(image, truth, colour=GROUND_TRUTH)
            drawn = draw_boxes(drawn, boxes, captions)
            shrink(drawn).save(folder / f"{image_id}.jpg", quality=90)
        return folder

    def close(self) -> None:
        """Draw the learning curve of every epoch logged so far; close TensorBoard's files."""
        if self.csv_path.is_file():
            plot_log(self.csv_path, self.out / LEARNING_CURVE)
        if self._writer is not None:
            self._writer.close()


def metric_columns(prefix: str, metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The headline metrics as flat `prefix/name` columns."""
    return {f"{prefix}/{key}": metrics.get(key) for key in _HEADLINE}


def plot_log(csv_path: Path, png: Path) -> Path | None:
    """Draw a run's log.csv as its learning curve (mAP per epoch, loss, learning rate)."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return learning_curve(rows, png)
