"""`trashmap ml explore`: what an annotation file holds, as a CSV, a stats JSON and plots."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.coco_eval import resize_scale, size_class
from ml.data.coco_file import AnnotationFileError, write_json

logger = logging.getLogger(__name__)

META_COLUMNS = ("img_file", "cat_name", "supercategory", "x", "y", "width", "height", "full_path")


@dataclass(frozen=True)
class ExploreOptions:
    """The annotation file, its images (optional), and the training input size."""

    annotations: Path
    out: Path
    images: Path | None = None
    min_size: int = 800
    max_size: int = 1333
    samples: int = 8


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "min": ordered[0],
        "p10": pick(0.1),
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p90": pick(0.9),
        "max": ordered[-1],
    }


def compute_stats(data: dict[str, Any], min_size: int, max_size: int) -> dict[str, Any]:
    """Counts per class, per image, image sizes, box sizes after the training resize, defects."""
    categories = {c["id"]: c for c in data["categories"]}
    images = {i["id"]: i for i in data["images"]}
    per_category = Counter({c["name"]: 0 for c in data["categories"]})
    per_super = Counter({c.get("supercategory", c["name"]): 0 for c in data["categories"]})
    per_image = Counter({i: 0 for i in images})
    sides, widths, heights = [], [], []
    # COCO's size buckets as `map_small`... count them (box area at the model's input) and
    # as `map_small_original`... do (the file's area, TACO's segment area, at full size).
    sizes = Counter({"small": 0, "medium": 0, "large": 0})
    sizes_original = Counter({"small": 0, "medium": 0, "large": 0})
    outside = 0
    for ann in data["annotations"]:
        cat = categories[ann["category_id"]]
        per_category[cat["name"]] += 1
        per_super[cat.get("supercategory", cat["name"])] += 1
        per_image[ann["image_id"]] += 1
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        outside += x < 0 or y < 0 or x + w > img["width"] or y + h > img["height"]
        scale = resize_scale(img["width"], img["height"], min_size, max_size)
        area = (w * scale) * (h * scale)
        sides.append(area**0.5)
        widths.append(w * scale)
        heights.append(h * scale)
        sizes[size_class(area)] += 1
        sizes_original[size_class(float(ann.get("area") or w * h))] += 1
    id_counts = Counter(a["id"] for a in data["annotations"])
    scenes = {s["id"] for s in data.get("scene_categories", [])}
    scene_tags = data.get("scene_annotations", [])
    used_scenes = {s for tag in scene_tags for s in tag.get("background_ids", [])}
    shapes = Counter((i["width"], i["height"]) for i in data["images"])
    counts = list(per_image.values())
    return {
        "images": len(images),
        "annotations": len(data["annotations"]),
        "categories": len(categories),
        "supercategories": len(per_super),
        "per_category": dict(per_category.most_common()),
        "per_supercategory": dict(per_super.most_common()),
        "annotations_per_image": {
            **_spread([float(n) for n in counts]),
            "histogram": {str(k): v for k, v in sorted(Counter(counts).items())},
            "images_without_annotations": sum(1 for n in counts if n == 0),
        },
        "image_sizes": {
            "width": _spread([float(i["width"]) for i in data["images"]]),
            "height": _spread([float(i["height"]) for i in data["images"]]),
            "portrait": sum(1 for i in data["images"] if i["height"] > i["width"]),
            "landscape": sum(1 for i in data["images"] if i["height"] <= i["width"]),
            "most_common": [
                {"width": w, "height": h, "images": n} for (w, h), n in shapes.most_common(10)
            ],
        },
        "box_sizes_after_resize": {
            "min_size": min_size,
            "max_size": max_size,
            "sqrt_area": _spread(sides),
            "width": _spread(widths),
            "height": _spread(heights),
            "coco_size_classes": dict(sizes),
            "coco_size_classes_original": dict(sizes_original),
        },
        "defects": {
            "duplicate_annotation_ids": sorted(i for i, n in id_counts.items() if n > 1),
            "boxes_outside_image": outside,
            "undefined_scene_ids": sorted(used_scenes - scenes) if scenes else [],
        },
    }


def write_meta(data: dict[str, Any], images_dir: Path | None, path: Path) -> int:
    """One CSV row per annotation; returns the row count."""
    categories = {c["id"]: c for c in data["categories"]}
    images = {i["id"]: i for i in data["images"]}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(META_COLUMNS)
        for ann in data["annotations"]:
            img, cat = images[ann["image_id"]], categories[ann["category_id"]]
            full = (images_dir / img["file_name"]) if images_dir else Path(img["file_name"])
            writer.writerow(
                [
                    img["file_name"],
                    cat["name"],
                    cat.get("supercategory", cat["name"]),
                    *ann["bbox"],
                    str(full),
                ]
            )
    return len(data["annotations"])


def main(options: ExploreOptions) -> dict[str, Any]:
    """Write meta_df.csv, stats.json and the plots under `out`; returns the stats."""
    if not options.annotations.is_file():
        raise AnnotationFileError(f"annotation file {options.annotations} does not exist")
    # The raw file, defects included: exploring is how one finds them.
    data = json.loads(options.annotations.read_text())
    options.out.mkdir(parents=True, exist_ok=True)
    rows = write_meta(data, options.images, options.out / "meta_df.csv")
    stats = compute_stats(data, options.min_size, options.max_size)
    write_json(stats, options.out / "stats.json", indent=2)
    from ml import explore_plots  # matplotlib is slow to import; only plotting needs it

    plots = explore_plots.plot_all(data, stats, options.images, options.out, options.samples)
    logger.info(
        "%d images, %d annotations (%d CSV rows), %d categories in %d supercategories; plots: %s",
        stats["images"],
        stats["annotations"],
        rows,
        stats["categories"],
        stats["supercategories"],
        [p.name for p in plots],
    )
    return stats
