"""The options `trashmap ml train` and `trashmap ml cv` share (click only: no torch here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

# Kept in step with ml.detector.ARCHITECTURES (a test checks); listed here to avoid torch.
ARCHITECTURES = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
)

# (flags, keyword arguments) of every option `train` and `cv` share.
_TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--model",),
        dict(
            type=click.Choice(ARCHITECTURES),
            default=ARCHITECTURES[0],
            show_default=True,
            help="torchvision Faster R-CNN architecture.",
        ),
    ),
    (
        ("--classes",),
        dict(
            default="taco15",
            show_default=True,
            help="Class set: taco15, taco10, supercategories, litter, 'all' (the "
            "file's own categories) or a path to a class-set .json.",
        ),
    ),
    (
        ("--weights",),
        dict(
            default="torchvision",
            show_default=True,
            help="Start from 'none' (random), 'torchvision' (COCO weights via the "
            "torchvision weights API) or a path to a local weights file.",
        ),
    ),
    (
        ("--trainable-backbone-layers",),
        dict(
            type=click.IntRange(0, 6),
            default=None,
            help="With torchvision weights: backbone stages "
            "left trainable (torchvision default 3).",
        ),
    ),
    (
        ("--epochs",),
        dict(
            type=click.IntRange(1),
            default=20,
            show_default=True,
            help="Passes over the training images.",
        ),
    ),
    (
        ("--batch-size",),
        dict(
            type=click.IntRange(1),
            default=4,
            show_default=True,
            help="Images per step per process.",
        ),
    ),
    (
        ("--accumulate",),
        dict(
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="Batches whose gradients add up before one optimizer step.",
        ),
    ),
    (
        ("--optimizer",),
        dict(
            type=click.Choice(["adamw", "sgd"]),
            default="adamw",
            show_default=True,
            help="AdamW, or SGD with momentum.",
        ),
    ),
    (("--lr",), dict(type=float, default=1e-4, show_default=True, help="Learning rate.")),
    (("--weight-decay",), dict(type=float, default=1e-4, show_default=True, help="Weight decay.")),
    (("--momentum",), dict(type=float, default=0.9, show_default=True, help="SGD momentum.")),
    (
        ("--warmup-iters",),
        dict(
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Optimizer steps of linear learning-rate warm-up "
            "(SGD usually wants a few hundred).",
        ),
    ),
    (
        ("--lr-patience",),
        dict(
            type=click.IntRange(0),
            default=3,
            show_default=True,
            help="Epochs without validation gain before ReduceLROnPlateau cuts the learning rate.",
        ),
    ),
    (
        ("--lr-factor",),
        dict(type=float, default=0.1, show_default=True, help="ReduceLROnPlateau's cut factor."),
    ),
    (
        ("--clip-grad",),
        dict(
            type=float, default=None, help="Clip the gradient norm to this value (off by default)."
        ),
    ),
    (
        ("--precise-bn",),
        dict(
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Before each validation, recompute BatchNorm statistics over "
            "this many training batches (0: off). Helps models trained "
            "from scratch, whose running averages lag behind.",
        ),
    ),
    (
        ("--select-on",),
        dict(
            type=click.Choice(["map", "map50"]),
            default="map",
            show_default=True,
            help="Validation metric that picks the checkpoint kept.",
        ),
    ),
    (
        ("--val-fraction",),
        dict(
            type=float,
            default=0.15,
            show_default=True,
            help="Share of the training images held out to pick the best "
            "epoch, when no validation file is given.",
        ),
    ),
    (
        ("--min-size",),
        dict(
            type=click.IntRange(32),
            default=800,
            show_default=True,
            help="Shorter image side fed to the model.",
        ),
    ),
    (
        ("--max-size",),
        dict(
            type=click.IntRange(32),
            default=1333,
            show_default=True,
            help="Upper bound of the longer image side.",
        ),
    ),
    (
        ("--hflip",),
        dict(
            type=click.FloatRange(0, 1),
            default=0.5,
            show_default=True,
            help="Probability of a horizontal flip.",
        ),
    ),
    (
        ("--vflip",),
        dict(
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Probability of a vertical flip (litter seen from above).",
        ),
    ),
    (
        ("--scale-jitter",),
        dict(
            type=click.FloatRange(0),
            default=0.0,
            show_default=True,
            help="Scale augmentation: 0.3 zooms out up to 1.3x or crops in "
            "to 1/1.3 of a side. 0 turns it off.",
        ),
    ),
    (
        ("--photometric",),
        dict(
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Probability of brightness/contrast/saturation/hue jitter.",
        ),
    ),
    (
        ("--rois-per-image",),
        dict(
            type=click.IntRange(1),
            default=None,
            help="Boxes sampled per image for the box head in training (torchvision: 512).",
        ),
    ),
    (
        ("--rpn-proposals",),
        dict(
            type=click.IntRange(1),
            default=None,
            help="RPN proposals kept per image in training (torchvision: 2000).",
        ),
    ),
    (
        ("--freeze-bn/--no-freeze-bn",),
        dict(default=False, show_default=True, help="Freeze every BatchNorm (for small batches)."),
    ),
    (
        ("--keep-empty/--drop-empty",),
        dict(
            default=True,
            show_default=True,
            help="Keep images with no box of the class set as negatives.",
        ),
    ),
    (
        ("--device",),
        dict(
            default="auto",
            show_default=True,
            help="auto, cpu, cuda or cuda:N (torchrun sets one per process).",
        ),
    ),
    (
        ("--amp/--no-amp",),
        dict(default=True, show_default=True, help="Mixed precision with torch.amp (CUDA only)."),
    ),
    (
        ("--workers",),
        dict(
            type=click.IntRange(0),
            default=4,
            show_default=True,
            help="DataLoader worker processes.",
        ),
    ),
    (
        ("--threads",),
        dict(
            type=click.IntRange(1),
            default=None,
            help="CPU threads for torch (default: torch's choice).",
        ),
    ),
    (
        ("--seed",),
        dict(
            type=int,
            default=42,
            show_default=True,
            help="Seed of splits, folds, initialisation and augmentation.",
        ),
    ),
    (("--resume",), dict(is_flag=True, help="Continue from OUT/last.pt if it exists.")),
    (
        ("--val-images",),
        dict(
            type=click.IntRange(0),
            default=4,
            show_default=True,
            help="Validation images saved with their boxes each epoch.",
        ),
    ),
    (
        ("--score-threshold",),
        dict(
            type=click.FloatRange(0, 1),
            default=0.5,
            show_default=True,
            help="Score threshold stored in the checkpoint for workers.",
        ),
    ),
    (("--name",), dict(default="trashmap", show_default=True, help="Model name.")),
    (("--version",), dict(default=None, help="Model version (default: start time, UTC).")),
    (
        ("--tensorboard/--no-tensorboard",),
        dict(default=True, show_default=True, help="Write TensorBoard logs to OUT/tensorboard."),
    ),
    (
        ("--progress/--no-progress",),
        dict(default=True, show_default=True, help="Show progress bars."),
    ),
]


def train_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a command with every option of `train` (shared by `cv`)."""
    for flags, kwargs in reversed(_TRAIN_OPTIONS):
        command = click.option(*flags, **kwargs)(command)
    return command
