"""`trashmap ml predict`: run a checkpoint on a folder of photos; annotated copies + one JSON."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm import tqdm

from ml.data.coco_file import write_json
from ml.detector import Detection, Detector, read_checkpoint
from ml.images import list_images, open_oriented
from ml.slicing import checkpoint_slicing, predict_sliced
from ml.visualize import draw_boxes, shrink

logger = logging.getLogger(__name__)

DETECTIONS = "detections.json"


@dataclass(frozen=True)
class PredictOptions:
    """A checkpoint, the photos to run it on, and where the results go."""

    weights: Path
    inputs: Path
    out: Path
    device: str = "auto"
    batch_size: int = 4
    score_threshold: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    longest_side: int = 2048
    slice_size: int | None = None  # None: the checkpoint's setting
    slice_overlap: float | None = None
    progress: bool = True


def _output_names(paths: list[Path], root: Path) -> dict[Path, str]:
    """Annotated file name per input: its relative path as a .jpg, extension kept on clashes."""
    plain = {p: p.relative_to(root).with_suffix(".jpg").as_posix() for p in paths}
    taken: dict[str, int] = {}
    for name in plain.values():
        taken[name] = taken.get(name, 0) + 1
    return {
        p: (name if taken[name] == 1 else p.relative_to(root).as_posix() + ".jpg")
        for p, name in plain.items()
    }


def _entry(path: Path, root: Path, image: Image.Image, found: list[Detection]) -> dict[str, Any]:
    return {
        "file": path.relative_to(root).as_posix(),
        "width": image.width,
        "height": image.height,
        "detections": [
            {**asdict(d), "box": [round(v, 2) for v in d.box], "score": round(d.score, 4)}
            for d in found
        ],
    }


def main(options: PredictOptions) -> dict[str, Any]:
    """Detect litter in every JPEG, PNG, HEIC (and WebP) under `inputs`; returns the JSON."""
    if not options.inputs.is_dir():
        raise FileNotFoundError(f"input folder {options.inputs} does not exist")
    detector = Detector.from_checkpoint(
        options.weights, options.device, min_size=options.min_size, max_size=options.max_size
    )
    slicing = checkpoint_slicing(
        read_checkpoint(options.weights)[1], options.slice_size, options.slice_overlap
    )
    paths = list_images(options.inputs)
    if not paths:
        logger.warning("no JPEG, PNG or HEIC files under %s", options.inputs)
    names = _output_names(paths, options.inputs)
    entries: list[dict[str, Any]] = []
    for start in tqdm(
        range(0, len(paths), options.batch_size), desc="predict", disable=not options.progress
    ):
        batch: list[tuple[Path, Image.Image]] = []
        for path in paths[start : start + options.batch_size]:
            try:
                batch.append((path, open_oriented(path)))
            except Exception as exc:  # one broken photo must not stop the folder
                logger.warning("%s cannot be decoded: %s", path, exc)
                entries.append(
                    {
                        "file": path.relative_to(options.inputs).as_posix(),
                        "error": f"cannot be decoded: {exc}",
                    }
                )
        if slicing.enabled:
            pixels = [pil_to_tensor(img) for _, img in batch]
            results = predict_sliced(detector, pixels, slicing, options.score_threshold)
        else:
            results = detector.predict([img for _, img in batch], options.score_threshold)
        for (path, image), found in zip(batch, results, strict=True):
            target = options.out / names[path]
            target.parent.mkdir(parents=True, exist_ok=True)
            captions = [f"{d.label} {d.score:.2f}" for d in found]
            drawn = draw_boxes(image, [d.box for d in found], captions)
            shrink(drawn, options.longest_side).save(target, quality=90)
            entries.append(_entry(path, options.inputs, image, found) | {"annotated": names[path]})
    info = detector.info
    report = {
        "model": {
            "name": info.name,
            "version": info.version,
            "arch": info.arch,
            "sha256": detector.weights_sha256,
            "classes": list(info.class_names),
            "score_threshold": (
                info.score_threshold if options.score_threshold is None else options.score_threshold
            ),
            "slice": {"size": slicing.size, "overlap": slicing.overlap},
        },
        "images": entries,
    }
    write_json(report, options.out / DETECTIONS, indent=2)
    logger.info(
        "%d images, %d detections -> %s",
        len(entries),
        sum(len(e.get("detections", [])) for e in entries),
        options.out / DETECTIONS,
    )
    return report
