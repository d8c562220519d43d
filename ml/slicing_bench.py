"""`trashmap bench slicing`: one checkpoint scored on whole photos and sliced, side by side.

Generated TACO-like scenes (`ml.scenes`) are split into train and test photos; a small model
is trained once on native-resolution crops (`--crop-size` = the input side, so objects
reach it at their own size), and the same checkpoint is scored by `ml.evaluate` twice: on
the whole photo resized to the input (small litter shrunk 3-4x below what it learnt) and
sliced into tiles of the crop side (litter at the scale it learnt) plus the whole photo.

To stay within minutes on a CPU the default photos are 600-800 px and the input 160 px:
smaller than production (3000-4000 px at 800 px) with the same 3-4x shrink and TACO's box
sizes in input pixels (capped at 0.35 of the input side), which is what decides what slicing
gains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ml.data.coco_file import read_coco, write_json
from ml.evaluate import EvaluateOptions
from ml.evaluate import main as evaluate_main
from ml.scenes import SceneSpec, input_sides, make_scenes, small_share
from ml.train import TrainOptions
from ml.train import main as train_main
from ml.train_options import Architecture

logger = logging.getLogger(__name__)

REPORT = "slicing_bench.json"
# Headline metric -> key in ml.evaluate's metrics; reported as <key>_full and <key>_sliced.
COMPARED = {"map": "map", "map_small": "map_small", "map50": "map50"}


@dataclass(frozen=True)
class BenchOptions:
    """Data, model and budget of the benchmark; the defaults train about 6 minutes on a CPU."""

    out: Path
    train_photos: int = 48
    test_photos: int = 12
    long_side: tuple[int, int] = (600, 800)  # 3000-4000 px scaled like the input
    min_size: int = 160  # the model input (production: 800 / 1333), also the crop side
    max_size: int = 267
    epochs: int = 24
    objects: tuple[int, int] = (6, 16)  # per photo: more boxes per crop than TACO's ~3
    # Largest box side at the input, as a share of its side. Lower caps would keep large
    # litter inside one tile, but thin boxes shrunk to fit fall under 32 px: TACO's small
    # share (0.36) then rises (0.65 at 0.25).
    max_fraction: float = 0.35
    clutter: float = 0.5  # the ground's lines and specks, relative to ml.scenes' default
    crop_anywhere: float = 0.1  # few empty tiles: every step should hold litter
    batch_size: int = 4
    lr: float = 0.02
    # torchvision's CPU configuration of the MobileNet (150 proposals per image in inference).
    model: Architecture = "fasterrcnn_mobilenet_v3_large_320_fpn"
    overlap: float = 0.2
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    progress: bool = True


def _train(options: BenchOptions, train: Path) -> Path:
    """Train from scratch on crops of the input side; returns best.pt (the last epoch)."""
    result = train_main(
        TrainOptions(
            annotations=train,
            images=train.parent,
            out=options.out / "run",
            model=options.model,
            classes="litter",
            weights="none",
            epochs=options.epochs,
            batch_size=options.batch_size,
            optimizer="sgd",
            lr=options.lr,
            # Constant-rate SGD stalls at coarse boxes; the cosine's low end sharpens them.
            schedule="cosine",
            # Steps, not epochs: the warm-up of the shapes tests' short runs, which learn.
            warmup_iters=30,
            # From scratch, BatchNorm's running averages lag behind the weights without it.
            precise_bn=8,
            rois_per_image=64,
            rpn_proposals=300,
            min_size=(options.min_size,),
            max_size=options.max_size,
            crop_size=options.min_size,
            crop_anywhere=options.crop_anywhere,
            slice_overlap=options.overlap,
            # Nothing to choose an epoch with: the benchmark compares inference, not epochs.
            val_fraction=0.0,
            val_images=0,
            device=options.device,
            threads=options.threads,
            workers=0,
            seed=options.seed,
            tensorboard=False,
            progress=options.progress,
            name="slicing-bench",
        )
    )
    return result.checkpoint


def _score(
    options: BenchOptions, checkpoint: Path, test: Path, slice_size: int | None
) -> tuple[dict[str, Any], float]:
    """ml.evaluate's metrics and photos per second (decoding included) of one pass."""
    started = time.perf_counter()
    metrics = evaluate_main(
        EvaluateOptions(
            weights=checkpoint,
            annotations=test,
            images=test.parent,
            device=options.device,
            batch_size=1,
            workers=0,
            slice_size=slice_size,
            progress=options.progress,
        )
    )
    return metrics, metrics["images"] / (time.perf_counter() - started)


def main(options: BenchOptions) -> dict[str, Any]:
    """Generate, train once, score whole-photo and sliced; write and return the report."""
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    data = options.out / "data"
    spec = SceneSpec(
        long_side=options.long_side,
        input_size=(options.min_size, options.max_size),
        min_objects=options.objects[0],
        max_objects=options.objects[1],
        clutter=options.clutter,
        max_fraction=options.max_fraction,
    )
    train = make_scenes(
        data,
        replace(spec, images=options.train_photos, seed=options.seed, folder="train"),
        "train.json",
    )
    test = make_scenes(
        data,
        replace(spec, images=options.test_photos, seed=options.seed + 1, folder="test"),
        "test.json",
    )
    started = time.perf_counter()
    checkpoint = _train(options, train)
    train_s = time.perf_counter() - started
    full, full_speed = _score(options, checkpoint, test, 0)
    sliced, sliced_speed = _score(options, checkpoint, test, None)  # the checkpoint's tiles
    report: dict[str, Any] = {}
    for name, key in COMPARED.items():
        report[f"{name}_full"] = full[key]
        report[f"{name}_sliced"] = sliced[key]
    report |= {
        "photos_per_s_full": full_speed,
        "photos_per_s_sliced": sliced_speed,
        "train_seconds": train_s,
        "slice": sliced["slice"],
        "test_boxes": full["annotations"],
        # COCO's small at the input (< 32 px); TACO's share at 800/1333 is 0.36.
        "test_small_share": small_share(
            input_sides(read_coco(test), (options.min_size, options.max_size))
        ),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "full": full,
        "sliced": sliced,
    }
    write_json(report, options.out / REPORT, indent=2)
    logger.info("slicing bench: %s", {k: report[k] for k in list(report)[:8]})
    return report


def table(report: dict[str, Any]) -> str:
    """The side-by-side comparison as a Markdown table."""

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = [
        "| metric | whole photo | sliced |",
        "|---|---|---|",
        *(
            f"| {name} | {cell(report[f'{name}_full'])} | {cell(report[f'{name}_sliced'])} |"
            for name in COMPARED
        ),
        f"| photos/s | {report['photos_per_s_full']:.2f} | {report['photos_per_s_sliced']:.2f} |",
    ]
    return "\n".join(rows)
