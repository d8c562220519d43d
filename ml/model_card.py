"""The model card of a trained checkpoint: one JSON dict, rendered as MODEL_CARD.md.

`trashmap ml train` builds it at the end of a run, writes model_card.json and MODEL_CARD.md
next to the checkpoint, and stores the same dict inside the checkpoint (key `card`), so
`trashmap models register` keeps it in the database and `GET /api/v1/models` serves it.
The JSON is the source; the markdown is only ever rendered from it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml import recipe
from ml.categories import ClassSet
from ml.coco_eval import ORIGINAL_KEYS, SUMMARY_KEYS
from ml.data.coco_file import read_training_coco, write_json
from ml.detector import ModelInfo, file_sha256
from ml.train_options import TrainOptions
from trashmap.versions import CARD_KEY

logger = logging.getLogger(__name__)

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CHECKPOINT_KEY = CARD_KEY
CARD_VERSION = 1
# Options that say where the run read, wrote and ran, not how the model was made.
NOT_RECIPE = frozenset(
    {
        "annotations",
        "images",
        "out",
        "extra_annotations",
        "val_annotations",
        "test_annotations",
        "device",
        "workers",
        "threads",
        "resume",
        "val_images",
        "tensorboard",
        "progress",
        "name",
        "version",
    }
)
NO_TEST_SPLIT = (
    "No test split was scored: the metrics are the validation split's, which also chose the "
    "epoch and the threshold, so they are optimistic."
)
# A class's test AP resting on fewer boxes than this is called out under limits.
FEW_BOXES = 30
INTENDED_USE = (
    "Finding and counting litter in geotagged outdoor photos (phones, walks, clean-ups) to map "
    "where it accumulates and to plan clean-ups. Counts per area are estimates to compare "
    "places and dates, not an inventory; a person should verify before acting on one photo."
)
LIMITS = (
    "Scores are COCO box metrics on held-out photos from the same sources as the training "
    "photos; photos from other places, cameras or seasons may score lower.",
    "Small litter (cigarettes, caps, tabs) is hard: see `map_small` at the model's input "
    "scale, and consider sliced inference for large photos.",
    "Not for surveillance or identifying people; people and vehicles are not classes.",
)


def build_card(
    options: TrainOptions, class_set: ClassSet, info: ModelInfo, summary: Mapping[str, Any]
) -> dict[str, Any]:
    """The card of a finished run (`summary` as train writes it to metrics.json)."""
    val = summary.get("val") or {}
    test = summary.get("test") or {}
    card = {
        "card_version": CARD_VERSION,
        "model": {
            "name": info.name,
            "version": info.version,
            "arch": info.arch,
            "input_size": {"min": info.min_size, "max": info.max_size},
            "weights": options.weights,
        },
        "data": _data(options, val, test),
        "classes": {
            "set": class_set.name,
            "names": list(class_set.classes),
            "scored": list(class_set.scored().classes),
            "description": class_set.description or None,
        },
        "recipe": {k: v for k, v in options.to_dict().items() if k not in NOT_RECIPE},
        "training": {
            "best_epoch": summary.get("best_epoch"),
            "images_per_s": summary.get("images_per_s"),
            "peak_memory_bytes": summary.get("peak_memory_bytes"),
        },
        "metrics": {"validation": _metrics(val), "test": _metrics(test) if test else None},
        "threshold": {
            "value": info.score_threshold,
            "source": recipe.score_threshold_source(options, val),
            "validation_best_f1": val.get("best_f1"),
        },
        "slicing": recipe.slicing(options),
        "intended_use": INTENDED_USE,
        "limits": [*LIMITS, *_data_limits(class_set, test)],
    }
    # Plain JSON (tuples as lists): the checkpoint, the file and the database hold one card.
    return dict(json.loads(json.dumps(card)))


def _data(options: TrainOptions, val: Mapping[str, Any], test: Mapping[str, Any]) -> dict[str, Any]:
    training = read_training_coco(options.annotations, options.extra_annotations)

    def split(source: str, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
        if not metrics:
            return None
        return {
            "source": source,
            "images": metrics.get("images"),
            "boxes": metrics.get("annotations"),
        }

    return {
        "annotations": str(options.annotations),
        "annotations_sha256": file_sha256(options.annotations),
        "extra_annotations": (
            None if options.extra_annotations is None else str(options.extra_annotations)
        ),
        "images": len(training["images"]),
        "boxes": len(training["annotations"]),
        "validation": split(
            str(options.val_annotations)
            if options.val_annotations is not None
            else f"{options.val_fraction:.0%} of the training images, stratified",
            val,
        ),
        "test": split(str(options.test_annotations), test),
    }


def _metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline, both size bucketings, per class and class-agnostic."""
    return {
        "images": metrics.get("images"),
        "boxes": metrics.get("annotations"),
        **{key: metrics.get(key) for key in (*SUMMARY_KEYS, *ORIGINAL_KEYS)},
        "per_class_ap": metrics.get("per_class") or {},
        "per_class_ap50": metrics.get("per_class_ap50") or {},
        "per_class_boxes": metrics.get("boxes_per_class") or {},
        "litter": metrics.get("litter"),
    }


def _data_limits(class_set: ClassSet, test: Mapping[str, Any]) -> list[str]:
    if not test:
        return [NO_TEST_SPLIT]
    boxes = test.get("boxes_per_class") or {}
    absent = [n for n in class_set.scored().classes if not boxes.get(n)]
    few = [
        f"{n} ({boxes[n]})" for n in class_set.scored().classes if 0 < boxes.get(n, 0) < FEW_BOXES
    ]
    limits = []
    if absent:
        limits.append(f"No test boxes of {', '.join(absent)}: their AP is unknown.")
    if few:
        limits.append(f"Under {FEW_BOXES} test boxes behind the AP of {', '.join(few)}.")
    return limits


def write_card(card: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """model_card.json and MODEL_CARD.md in `folder`."""
    json_path = write_json(card, folder / CARD_JSON, indent=2)
    md_path = folder / CARD_MD
    md_path.write_text(render_markdown(card))
    logger.info("model card: %s", md_path)
    return json_path, md_path


def _num(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "n/a" if value is None else str(value)


def render_markdown(card: Mapping[str, Any]) -> str:
    """MODEL_CARD.md from the card's JSON."""
    model, data, classes = card["model"], card["data"], card["classes"]
    val, test = card["metrics"]["validation"], card["metrics"]["test"] or {}
    lines = [
        f"# Model card: {model['name']}:{model['version']}",
        "",
        f"{model['arch']}, input {model['input_size']['min']}/{model['input_size']['max']} px, "
        f"started from weights `{model['weights']}`.",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Data",
        "",
        f"- Training file: `{data['annotations']}` (sha256 {data['annotations_sha256'][:12]}), "
        f"{data['images']} images, {data['boxes']} boxes"
        + (f"; extra: `{data['extra_annotations']}`" if data["extra_annotations"] else ""),
    ]
    for name in ("validation", "test"):
        part = data[name]
        if part:
            lines.append(
                f"- {name.title()}: {part['source']}: {part['images']} images, "
                f"{part['boxes']} boxes"
            )
    lines += [
        f"- Class set `{classes['set']}`: {', '.join(classes['names'])}",
        "",
        "## Metrics",
        "",
        "COCO box AP; `map_small/medium/large` by box area at the model's input scale, "
        "`*_original` by the annotation's area at full resolution; `litter` merges all classes.",
        "",
        "| metric | validation | test |",
        "|---|---|---|",
    ]
    for key in (*SUMMARY_KEYS, *ORIGINAL_KEYS):
        lines.append(f"| {key} | {_num(val.get(key))} | {_num(test.get(key))} |")
    for key in ("map", "map50"):
        lines.append(
            f"| litter {key} | {_num((val.get('litter') or {}).get(key))} | "
            f"{_num((test.get('litter') or {}).get(key))} |"
        )
    lines += [
        "",
        "| class | validation AP | test AP | test AP50 | test boxes |",
        "|---|---|---|---|---|",
    ]
    for name in classes["scored"]:
        lines.append(
            f"| {name} | {_num(val['per_class_ap'].get(name))} | "
            f"{_num(test.get('per_class_ap', {}).get(name))} | "
            f"{_num(test.get('per_class_ap50', {}).get(name))} | "
            f"{_num(test.get('per_class_boxes', {}).get(name))} |"
        )
    threshold, slicing = card["threshold"], card["slicing"]
    lines += [
        "",
        "## Score threshold and slicing",
        "",
        f"- Threshold {_num(threshold['value'])}: {threshold['source']}.",
        "- Sliced inference: "
        + (
            f"tiles of {slicing['size']} px, overlap {slicing['overlap']}, plus the whole photo."
            if slicing.get("size")
            else "off (whole photo only)."
        ),
        "",
        "## Recipe",
        "",
        "| option | value |",
        "|---|---|",
        *(f"| {k} | {_plain(v)} |" for k, v in card["recipe"].items()),
        "",
        "## Limits",
        "",
        *(f"- {limit}" for limit in card["limits"]),
    ]
    return "\n".join(lines) + "\n"
