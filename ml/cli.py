"""`trashmap ml ...`: the training-side commands.

Only click and the standard library are imported here: the top-level `trashmap` command
imports this module, and `trashmap web` must start without torch. Each command imports its
implementation when it runs and calls a plain `main(options)`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ml.train_options import EXISTING_DIR, EXISTING_FILE, OUT_DIR, Command, click_options


def _setup_logging() -> None:
    # Handlers are configured at entry points only; keep a caller's configuration if present.
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def _run(function: Callable[[], Any]) -> Any:
    """Call `function`, turning expected failures into a one-line error and exit status 1."""
    try:
        return function()
    except (ValueError, FileNotFoundError, ArithmeticError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(name="ml")
def ml() -> None:
    """Train, cross-validate, evaluate and run the litter detector (offline, needs torch)."""
    _setup_logging()


@ml.command("download-taco")
@click.option(
    "--annotations",
    type=EXISTING_FILE,
    required=True,
    help="COCO annotation file whose images to fetch (e.g. TACO's annotations.json).",
)
@click.option(
    "--out",
    type=OUT_DIR,
    required=True,
    help="Folder for the images, laid out by their file_name (batch_1/000006.jpg).",
)
@click.option(
    "--url-field",
    default="flickr_url",
    show_default=True,
    help="Image field holding the URL; flickr_url is the original with its EXIF.",
)
@click.option(
    "--workers", type=click.IntRange(1), default=8, show_default=True, help="Parallel downloads."
)
@click.option(
    "--retries",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Extra attempts after a network error, 429 or 5xx.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds before the first retry; doubles each time.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the server on each request.",
)
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def download_taco(**kwargs: Any) -> None:
    """Download and verify every image of an annotation file; resumable, reports failures."""
    from ml.download import REPORT, DownloadOptions, main

    report = _run(lambda: main(DownloadOptions(**kwargs)))
    click.echo(
        f"{report['images']} images: {report['downloaded']} downloaded, {report['present']} "
        f"already present, {len(report['failed'])} failed (details in {kwargs['out'] / REPORT})"
    )
    for failure in report["failed"]:
        click.echo(f"  {failure['file_name']}: {failure['reason']}", err=True)
    if report["failed"]:
        raise SystemExit(1)


@ml.command()
@click.option(
    "--annotations", type=EXISTING_FILE, required=True, help="COCO annotation file to describe."
)
@click.option(
    "--images",
    type=EXISTING_DIR,
    default=None,
    help="Image folder; when given, sample images are drawn with their boxes.",
)
@click.option(
    "--out", type=OUT_DIR, required=True, help="Folder for meta_df.csv, stats.json and the plots."
)
@click.option(
    "--min-size",
    type=click.IntRange(32),
    default=800,
    show_default=True,
    help="Training input size used to report box sizes as the model sees them.",
)
@click.option(
    "--max-size",
    type=click.IntRange(32),
    default=1333,
    show_default=True,
    help="Upper bound of the longer side, as in training.",
)
@click.option(
    "--samples",
    type=click.IntRange(0),
    default=8,
    show_default=True,
    help="Images drawn in samples.png.",
)
def explore(**kwargs: Any) -> None:
    """Describe an annotation file: per-annotation CSV, statistics and plots."""
    from ml.explore import ExploreOptions, main

    stats = _run(lambda: main(ExploreOptions(**kwargs)))
    top = list(stats["per_supercategory"].items())[:3]
    click.echo(
        f"{stats['images']} images, {stats['annotations']} annotations, "
        f"{stats['categories']} categories, {stats['supercategories']} supercategories; "
        f"largest: {', '.join(f'{n} ({c})' for n, c in top)}; written to {kwargs['out']}"
    )


def _echo_training(result: Any) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, one summary is enough
    click.echo(
        f"best epoch {result.best_epoch + 1}: val map {result.val_metrics.get('map')}, "
        f"map50 {result.val_metrics.get('map50')} -> {result.checkpoint}"
    )
    if result.test_metrics:
        click.echo(
            f"test map {result.test_metrics.get('map')}, map50 {result.test_metrics.get('map50')}"
        )
    click.echo(
        f"{result.images_per_s:.2f} images/s, "
        f"peak memory {result.peak_memory_bytes / 2**20:.0f} MiB"
    )


@ml.command()
@click_options()
def train(**kwargs: Any) -> None:
    """Fine-tune a Faster R-CNN; keeps the epoch with the best validation mAP (OUT/best.pt)."""
    from ml.train import TrainOptions, main

    _echo_training(_run(lambda: main(TrainOptions(**kwargs))))


@ml.command()
@click.option(
    "--annotations",
    type=EXISTING_FILE,
    default=None,
    help="COCO file to split into folds (not needed with --summarise).",
)
@click.option(
    "--images",
    type=EXISTING_DIR,
    default=None,
    help="Folder the annotations' file_name paths are relative to.",
)
@click.option(
    "--out",
    type=OUT_DIR,
    required=True,
    help="Folder for folds/, fold_K/ runs and cv_summary.json / .md.",
)
@click.option(
    "--folds",
    type=click.IntRange(2),
    default=5,
    show_default=True,
    help="Number of folds over images, stratified by class.",
)
@click.option(
    "--fold",
    type=click.IntRange(0),
    default=None,
    help="Run only fold K (0-based), e.g. one per GPU or process.",
)
@click.option(
    "--summarise",
    "summarise_only",
    is_flag=True,
    help="Only collect finished folds into cv_summary.json.",
)
@click_options(per_fold=False)
def cv(
    annotations: Path | None,
    images: Path | None,
    out: Path,
    folds: int,
    fold: int | None,
    summarise_only: bool,
    **kwargs: Any,
) -> None:
    """K-fold cross-validation: each fold trains (all `train` options apply) and is scored."""
    from ml.cross_validate import SUMMARY, CVOptions, main
    from ml.train import TrainOptions

    if not summarise_only and (annotations is None or images is None):
        raise click.UsageError("--annotations and --images are required unless --summarise")
    cv_options = CVOptions(annotations, images, out, folds, fold, summarise_only)
    placeholder = Path(".")  # each fold sets its own annotations, images and out
    options = TrainOptions(annotations=placeholder, images=placeholder, out=placeholder, **kwargs)
    summary = _run(lambda: main(cv_options, options))
    if summary is None:
        click.echo(f"fold {fold} done; run with --summarise once every fold has finished")
        return
    mean, std = summary["mean"], summary["std"]
    click.echo(
        f"{folds} folds: map {mean['map']} ± {std['map']}, "
        f"map50 {mean['map50']} ± {std['map50']} -> {out / SUMMARY}"
    )


def slice_options(command: Command) -> Command:
    """--slice and --slice-overlap, for every command that runs a checkpoint on photos."""
    command = click.option(
        "--slice-overlap",
        type=click.FloatRange(0, 1, max_open=True),
        default=None,
        help="Overlap of neighbouring tiles, as a share of the tile side (default: the "
        "checkpoint's, else 0.2).",
    )(command)
    return click.option(
        "--slice",
        "slice_size",
        type=click.IntRange(0),
        default=None,
        help="Also run overlapping SIZE px tiles at native resolution, merged with the whole "
        "photo by class-wise NMS (0: off; default: the checkpoint's setting, else off).",
    )(command)


@ml.command()
@click.option("--weights", type=EXISTING_FILE, required=True, help="Checkpoint to score.")
@click.option(
    "--annotations",
    type=EXISTING_FILE,
    required=True,
    help="COCO file of the split to score it on.",
)
@click.option(
    "--images",
    type=EXISTING_DIR,
    required=True,
    help="Folder the annotations' file_name paths are relative to.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the metrics to this JSON file.",
)
@click.option(
    "--classes",
    default=None,
    help="Class set mapping the file's categories (default: the checkpoint's).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Images per forward pass.",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="DataLoader worker processes.",
)
@slice_options
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def evaluate(**kwargs: Any) -> None:
    """COCO mAP@[.5:.95], mAP50, mAP75, by size and per class, with pycocotools."""
    from ml.coco_eval import format_metrics
    from ml.evaluate import EvaluateOptions, main

    click.echo(format_metrics(_run(lambda: main(EvaluateOptions(**kwargs)))))


@ml.command()
@click.option("--weights", type=EXISTING_FILE, required=True, help="Checkpoint to run.")
@click.argument("inputs", type=EXISTING_DIR)
@click.option(
    "--out",
    type=OUT_DIR,
    required=True,
    help="Folder for the annotated images and detections.json.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Images per forward pass.",
)
@click.option(
    "--score-threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Keep detections at least this confident (default: the checkpoint's).",
)
@click.option(
    "--min-size",
    type=click.IntRange(32),
    default=None,
    help="Override the checkpoint's input size (shorter side).",
)
@click.option(
    "--max-size",
    type=click.IntRange(32),
    default=None,
    help="Override the checkpoint's longer-side bound.",
)
@slice_options
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show a progress bar."
)
def predict(**kwargs: Any) -> None:
    """Detect litter in INPUTS (JPEG, PNG, HEIC; EXIF orientation applied)."""
    from ml.predict import DETECTIONS, PredictOptions, main

    report = _run(lambda: main(PredictOptions(**kwargs)))
    found = sum(len(e.get("detections", [])) for e in report["images"])
    click.echo(
        f"{len(report['images'])} images, {found} detections -> {kwargs['out'] / DETECTIONS}"
    )
