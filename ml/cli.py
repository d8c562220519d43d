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

from ml.train_options import (
    ARCHITECTURES,
    EXISTING_DIR,
    EXISTING_FILE,
    OUT_DIR,
    Command,
    click_options,
)
from trashmap.settings import MAX_SLICE_OVERLAP


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


def download_options(prefix: str = "") -> Callable[[Command], Command]:
    """--url-field, --[PREFIX]workers and --[PREFIX]retries: how images are fetched, for
    `download-taco` and `bootstrap` (whose --workers are the data loader's)."""

    def decorate(command: Command) -> Command:
        options = [
            click.option(
                "--url-field",
                default="flickr_url",
                show_default=True,
                help="Image field holding the URL; flickr_url is the original with its EXIF.",
            ),
            click.option(
                f"--{prefix}workers",
                type=click.IntRange(1),
                default=8,
                show_default=True,
                help="Parallel downloads.",
            ),
            click.option(
                f"--{prefix}retries",
                type=click.IntRange(0),
                default=4,
                show_default=True,
                help="Extra attempts per file after a network error, 429 or 5xx.",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


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
@download_options()
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
    """Fine-tune a Faster R-CNN; keeps the epoch with the best validation mAP (OUT/best.pt).

    Also writes OUT/MODEL_CARD.md and OUT/model_card.json (data, classes, recipe, metrics,
    threshold, slicing, limits); the card travels inside best.pt to `models register`.
    """
    from ml.train import TrainOptions, main

    _echo_training(_run(lambda: main(TrainOptions(**kwargs))))


@ml.command("plot-log")
@click.argument("run", type=EXISTING_DIR)
def plot_log(run: Path) -> None:
    """Draw RUN/log.csv (a train run's, or a cv fold's) as RUN/learning_curve.png.

    `train` draws it when it ends; this draws a run still going, or one that stopped.
    """
    from ml.training_log import LEARNING_CURVE
    from ml.training_log import plot_log as draw

    log = run / "log.csv"
    if not log.is_file():
        raise click.UsageError(f"{log} does not exist: no epoch of that run has ended yet")
    drawn = _run(lambda: draw(log, run / LEARNING_CURVE))
    click.echo(f"learning curve: {drawn}" if drawn else f"{log} holds no epoch yet")


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
    """K-fold cross-validation: each fold trains (all `train` options apply) and is scored.

    OUT/cv_summary.json and .md: per fold, mean ± std and a bootstrap 95% interval; AP per
    class with its test boxes; class-agnostic litter AP; with --classes taco10, the TACO
    paper's TACO-1 / TACO-10 table.
    """
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


@ml.command()
@click.option(
    "--out",
    type=OUT_DIR,
    required=True,
    help="Folder for everything: annotations.json, images/, cv/, final/, the model card, "
    "bootstrap_state.json and bootstrap_summary.json. Rerun with the same OUT to resume.",
)
@click.option(
    "--annotations-url",
    default="https://raw.githubusercontent.com/pedropro/TACO/master/data/annotations.json",
    show_default=True,
    help="COCO annotation file to fetch (TACO's official one); its images are fetched next.",
)
@click.option(
    "--folds",
    type=click.IntRange(2),
    default=5,
    show_default=True,
    help="Cross-validation folds over images, stratified by class.",
)
@download_options("download-")
@click.option(
    "--allow-missing",
    is_flag=True,
    help="Go on without images that still fail to download (default: stop, so a rerun retries).",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Register and activate the final model (needs the database).",
)
@click_options(per_fold=False)
def bootstrap(
    out: Path,
    annotations_url: str,
    folds: int,
    url_field: str,
    download_workers: int,
    download_retries: int,
    allow_missing: bool,
    register: bool,
    **kwargs: Any,
) -> None:
    """From nothing to an active model: download, cross-validate, train, register, activate.

    \b
    Stages, each recorded in OUT/bootstrap_state.json once finished; a rerun skips those
    and resumes the one that was interrupted:
      1 download  the annotation file (--annotations-url) and its images (as download-taco:
                  parallel, resumable, each verified) into OUT/images
      2 cv        --folds-fold cross-validation (as `cv`) in OUT/cv -> cv_summary.json;
                  finished folds are kept, an interrupted one continues from its last epoch
      3 final     one model on every image with the same options (as `train --resume`) in
                  OUT/final: the same --epochs; the epoch kept and the score threshold are
                  chosen on a --val-fraction inner validation split, as in each fold
      4 card      the final model's card (MODEL_CARD.md + .json) with the cv results, in OUT
      5 register  `trashmap models register OUT/final/best.pt --activate`

    \b
    Needs internet for stage 1 (GitHub and Flickr for TACO: 1,500 photos, a few GB), the
    database for stage 5 (TRASHMAP_DATABASE_URL, migrated; checked at the start) and a GPU:
    the default recipe trains 6 times (--folds + 1) for --epochs over 1,000-1,300 photos at
    800 px, a few hours on one current GPU and far too long on a CPU. Training logs its
    images/s each epoch: the first epoch tells how long the rest takes. One process, one GPU.
    The options from --extra-annotations on are `train`'s, used by every fold and by the
    final model (--resume is implied).
    """
    from ml.bootstrap import SUMMARY, BootstrapOptions, main
    from ml.train import TrainOptions

    boot = BootstrapOptions(
        out,
        annotations_url,
        folds,
        url_field,
        download_workers,
        download_retries,
        allow_missing=allow_missing,
        register=register,
    )
    placeholder = Path(".")  # each stage sets its own annotations, images and out
    options = TrainOptions(annotations=placeholder, images=placeholder, out=placeholder, **kwargs)
    summary = _run(lambda: main(boot, options, click.echo))
    cv_map = (summary["cv"] or {}).get("metrics", {}).get("map", {})
    version = summary["register"] or {}
    mean, std = (f"{v:.3f}" if v is not None else "n/a" for v in map(cv_map.get, ("mean", "std")))
    click.echo(
        f"{folds}-fold cv map {mean} ± {std}; "
        + (
            f"model version {version['id']} ({version['label']}) active; "
            if version.get("active")
            else ""
        )
        + f"summary -> {out / SUMMARY}"
    )


def slice_options(command: Command) -> Command:
    """--slice and --slice-overlap, for every command that runs a checkpoint on photos."""
    command = click.option(
        "--slice-overlap",
        type=click.FloatRange(0, MAX_SLICE_OVERLAP),
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


# Attached to `trashmap bench` (trashmap/cli/operations.py) by the top-level command.
@click.command("slicing")
@click.option(
    "--out",
    type=OUT_DIR,
    default=Path("var/bench/slicing"),
    show_default=True,
    help="Folder for the generated scenes, the training run and slicing_bench.json.",
)
@click.option(
    "--train-photos",
    type=click.IntRange(1),
    default=48,
    show_default=True,
    help="Scenes to train on.",
)
@click.option(
    "--test-photos", type=click.IntRange(1), default=12, show_default=True, help="Scenes to score."
)
@click.option(
    "--long-side",
    type=(click.IntRange(64), click.IntRange(64)),
    default=(600, 800),
    show_default=True,
    help="Range of the photos' long side. Production photos are 3000-4000 px at an 800 px "
    "input; keep long side / --min-size near 4-5 so litter shrinks 3-4x, as there.",
)
@click.option(
    "--min-size",
    type=click.IntRange(32),
    default=160,
    show_default=True,
    help="Model input (shorter side); also the side of the training crops and of the tiles.",
)
@click.option(
    "--max-size", type=click.IntRange(32), default=267, show_default=True, help="Longer-side bound."
)
@click.option(
    "--epochs", type=click.IntRange(1), default=24, show_default=True, help="Training epochs."
)
@click.option(
    "--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Crops per step."
)
@click.option(
    "--lr",
    type=click.FloatRange(0, min_open=True),
    default=0.02,
    show_default=True,
    help="SGD learning rate.",
)
@click.option(
    "--model",
    type=click.Choice(ARCHITECTURES),
    default="fasterrcnn_mobilenet_v3_large_320_fpn",
    show_default=True,
    help="Architecture, trained from scratch.",
)
@click.option(
    "--overlap",
    type=click.FloatRange(0, 0.9),
    default=0.2,
    show_default=True,
    help="Tile overlap of the sliced pass.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for torch.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of scenes and training.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, not a table.")
@click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)
def bench_slicing(as_json: bool, **kwargs: Any) -> None:
    """Train a small model once on generated TACO-like scenes, score it whole-photo vs sliced.

    The model trains on native-resolution crops; the same checkpoint is then scored by
    `trashmap ml evaluate` on each test photo resized whole, and sliced into tiles of the
    crop side plus the whole photo. Writes OUT/slicing_bench.json. Defaults: a few minutes
    on a CPU, with photos and input smaller than production at the same ratio.
    """
    import json

    from ml.slicing_bench import REPORT, BenchOptions, main, table

    _setup_logging()
    report = _run(lambda: main(BenchOptions(**kwargs)))
    if as_json:
        click.echo(json.dumps({k: v for k, v in report.items() if k not in ("full", "sliced")}))
        return
    click.echo(table(report))
    click.echo(
        f"{report['test_boxes']} test boxes ({report['test_small_share']:.0%} under 32 px at "
        f"the input), tiles {report['slice']['size']} px; trained in "
        f"{report['train_seconds']:.0f} s -> {kwargs['out'] / REPORT}"
    )
