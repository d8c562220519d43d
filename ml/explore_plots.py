"""Plots: `trashmap ml explore`'s class distributions and samples, training's learning curve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from ml.images import open_oriented
from ml.visualize import draw_boxes, shrink

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def bar_chart(counts: dict[str, int], title: str, path: Path) -> Path:
    """Horizontal bars, largest on top."""
    plt = _pyplot()
    names = list(counts)[::-1]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(names))))
    bars = ax.barh(names, [counts[n] for n in names], color="#3a7d44")
    ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_title(title)
    ax.set_xlabel("annotations")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def histogram(histogram: dict[str, int], title: str, xlabel: str, path: Path) -> Path:
    """Bars over integer values (e.g. annotations per image)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([int(k) for k in histogram], list(histogram.values()), color="#4a6fa5")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sample_grid(data: dict[str, Any], images_dir: Path, path: Path, count: int) -> Path | None:
    """Up to `count` images found on disk, their boxes drawn, in one grid; None if none exist."""
    categories = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    drawn: list[tuple[str, Image.Image]] = []
    for img in data["images"]:
        if len(drawn) == count:
            break
        file = images_dir / img["file_name"]
        if not file.is_file():
            continue
        try:
            image = open_oriented(file)
        except Exception as exc:  # a broken file is reported, not fatal to exploring
            logger.warning("cannot draw %s: %s", file, exc)
            continue
        anns = by_image.get(img["id"], [])
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [categories[a["category_id"]] for a in anns]
        drawn.append((img["file_name"], shrink(draw_boxes(image, boxes, labels), 800)))
    if not drawn:
        return None
    plt = _pyplot()
    cols = min(4, len(drawn))
    rows = -(-len(drawn) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, drawn, strict=False):
        ax.imshow(image)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(rows: list[dict[str, str]], path: Path) -> Path | None:
    """Validation mAP and mAP50 over the epochs, above training loss and learning rate.

    `rows` are log.csv's (empty cells: not measured); None when no epoch is recorded.
    """

    def series(key: str) -> tuple[list[int], list[float]]:
        kept = [(int(r["epoch"]) + 1, float(r[key])) for r in rows if r.get(key)]
        return [e for e, _ in kept], [v for _, v in kept]

    if not rows:
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for key, label in (("val/map", "mAP 0.5:0.95"), ("val/map50", "mAP50")):
        epochs, values = series(key)
        if epochs:
            top.plot(epochs, values, marker="o", markersize=3, label=label)
    top.set_ylabel("validation")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    if top.get_lines():
        top.legend(loc="upper left")
    epochs, values = series("train/loss")
    bottom.plot(epochs, values, color="#a0522d", label="training loss")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("epoch")
    bottom.grid(alpha=0.3)
    epochs, values = series("train/lr")
    if epochs:
        rate = bottom.twinx()
        rate.plot(epochs, values, color="#777777", linestyle="--", label="learning rate")
        rate.set_ylabel("learning rate (end of epoch)")
        rate.set_yscale("log")
    fig.suptitle(f"Learning curve ({len(rows)} epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(
    data: dict[str, Any], stats: dict[str, Any], images_dir: Path | None, out: Path, samples: int
) -> list[Path]:
    """Every plot explore makes; the sample grid only when images are on disk."""
    written = [
        bar_chart(
            stats["per_supercategory"], "Annotations per supercategory", out / "supercategories.png"
        ),
        bar_chart(stats["per_category"], "Annotations per category", out / "categories.png"),
        histogram(
            stats["annotations_per_image"]["histogram"],
            "Annotations per image",
            "annotations in the image",
            out / "annotations_per_image.png",
        ),
    ]
    if images_dir is not None and samples > 0:
        grid = sample_grid(data, images_dir, out / "samples.png", samples)
        if grid is None:
            logger.info("no images of the file found under %s: no sample plot", images_dir)
        else:
            written.append(grid)
    return written
