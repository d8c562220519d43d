"""`trashmap ml train`: fine-tune a Faster R-CNN on COCO-format litter annotations.

The checkpoint kept is the epoch with the best mAP on an inner validation split (a file, or a
stratified share of the training images); a test split, when given, is only ever reported.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ml import distributed, model_card, recipe
from ml.categories import ClassSet
from ml.coco_eval import coco_metrics, format_metrics
from ml.data import TacoDataset
from ml.data.coco_file import read_coco, read_training_coco, write_json
from ml.detector import resolve_device, save_checkpoint
from ml.engine import (
    batchnorm_layers,
    evaluate,
    peak_memory_bytes,
    recalibrate_batchnorm,
    reset_peak_memory,
    train_one_epoch,
)
from ml.train_options import TrainOptions
from ml.training_log import TrainingLog, metric_columns
from ml.transforms import eval_transforms

logger = logging.getLogger(__name__)

BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.json"

__all__ = ["TrainOptions", "TrainResult", "main"]


@dataclass(frozen=True)
class TrainResult:
    """Where the chosen model is and what it scored."""

    checkpoint: Path
    best_epoch: int
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    images_per_s: float
    peak_memory_bytes: int


def _validate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    dataset: TacoDataset,
    device: torch.device,
    ctx: distributed.Context,
    options: TrainOptions,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    amp = options.amp and device.type == "cuda"
    detections = evaluate(model, loader, device, amp=amp, progress=options.progress and ctx.is_main)
    detections = distributed.gather(ctx, detections)
    metrics = None
    if ctx.is_main:
        metrics = coco_metrics(
            dataset.ground_truth(),
            detections,
            dataset.class_set.classes,
            input_size=options.input_size,
        )
    return distributed.broadcast(ctx, metrics) or {}, detections


def _recalibrate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    ctx: distributed.Context,
    options: TrainOptions,
) -> None:
    """Fresh BatchNorm statistics before validating, the same on every rank."""
    amp = options.amp and device.type == "cuda"
    used = recalibrate_batchnorm(model, loader, device, options.precise_bn, amp=amp)
    norms = batchnorm_layers(model)
    stats = [t for m in norms for t in (m.running_mean, m.running_var) if t is not None]
    distributed.average(ctx, stats)
    logger.debug("BatchNorm statistics of %d layers recomputed over %d batches", len(norms), used)


def _samples(
    dataset: TacoDataset,
    detections: list[dict[str, Any]],
    count: int,
    threshold: float,
    class_set: ClassSet,
) -> list[tuple[Any, ...]]:
    by_id = {d["image_id"]: d for d in detections}
    samples = []
    for index in range(min(count, len(dataset))):
        record = dataset.records[index]
        det = by_id.get(record.image_id, {"boxes": [], "scores": [], "labels": []})
        kept = [
            (box, f"{class_set.name_of(label)} {score:.2f}")
            for box, score, label in zip(det["boxes"], det["scores"], det["labels"], strict=True)
            if score >= threshold
        ][:25]
        samples.append(
            (
                record.image_id,
                dataset.load_image(index),
                record.boxes.tolist(),
                [b for b, _ in kept],
                [c for _, c in kept],
            )
        )
    return samples


def _resume(
    options: TrainOptions,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    plateau: Any,
    scaler: torch.amp.GradScaler,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, Any]:
    """Restore the last epoch's state when --resume finds one; the loop's counters otherwise."""
    fresh = {
        "epoch": -1,
        "best_score": float("-inf"),
        "best_epoch": -1,
        "global_step": 0,
        "best_val": {},
    }
    path = options.out / LAST
    if not options.resume:
        return fresh
    if not path.is_file():
        logger.warning("--resume: %s does not exist yet, starting from scratch", path)
        return fresh
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["arch"] != options.model or tuple(state["class_names"]) != tuple(
        recipe.model_class_set(
            options,
            read_training_coco(options.annotations, options.extra_annotations)["categories"],
        ).classes
    ):
        raise ValueError(f"{path} is a {state['arch']} run for other classes; use another --out")
    optimizer.load_state_dict(state["optimizer"])
    recipe.load_resume_state(state, model, ema, schedule)
    plateau.load_state_dict(state["plateau"])
    scaler.load_state_dict(state["scaler"])
    logger.info("resuming after epoch %d from %s", state["epoch"], path)
    # The resumed run keeps its version unless --version names another.
    return {key: state[key] for key in fresh} | {"version": state.get("version")}


def main(options: TrainOptions) -> TrainResult:
    """Train, keep the epoch with the best validation mAP, and score it on the test split."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    ctx = distributed.init_from_env(device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    try:
        return _run(options, ctx, device)
    finally:
        distributed.shutdown(ctx)


def _run(options: TrainOptions, ctx: distributed.Context, device: torch.device) -> TrainResult:
    recipe.seed_everything(options.seed)
    train_ds, val_ds, class_set = recipe.datasets(options)
    if len(train_ds) == 0:
        raise ValueError(
            f"{options.annotations} has no training images in class set {class_set.name}"
        )
    options.out.mkdir(parents=True, exist_ok=True)
    model = recipe.model(options, class_set, device)
    optimizer = recipe.optimizer(options, model)
    plateau = recipe.plateau(options, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=options.amp and device.type == "cuda")
    loader = recipe.loader(train_ds, options, ctx, train=True)
    ema = recipe.ema(options, model)
    steps = recipe.optimizer_steps(loader, options.epochs, options.accumulate)
    cosine = recipe.cosine(options, optimizer, steps)
    state = _resume(options, model, optimizer, plateau, scaler, ema, cosine)
    # What is validated and saved: the weights' average under --ema.
    evaluated = ema.module if ema is not None else model
    resumed_version = state.pop("version", None)
    options = recipe.with_version(
        dataclasses.replace(options, version=options.version or resumed_version)
    )
    net: torch.nn.Module = model
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    warmup = cosine or recipe.warmup(options, optimizer, state["global_step"])
    val_loader = recipe.loader(val_ds, options, ctx, train=False) if val_ds is not None else None
    log = TrainingLog(options.out, options.tensorboard) if ctx.is_main else None
    extra = {
        "class_set": class_set.to_dict(),
        "options": options.to_dict(),
    }
    speeds: list[float] = []
    peak = 0
    for epoch in range(state["epoch"] + 1, options.epochs):
        recipe.start_epoch(loader, epoch, options.seed)
        reset_peak_memory(device)
        result = train_one_epoch(
            net,
            optimizer,
            loader,
            device,
            epoch=epoch,
            scaler=scaler,
            accumulate=options.accumulate,
            schedule=warmup,
            clip_grad=options.clip_grad,
            ema=ema,
            progress=options.progress and ctx.is_main,
        )
        state["global_step"] += -(-len(loader) // options.accumulate)
        if cosine is None and warmup is not None and state["global_step"] >= options.warmup_iters:
            warmup = None
        if options.precise_bn:
            _recalibrate(evaluated, loader, device, ctx, options)
        metrics: dict[str, Any] = {}
        detections: list[dict[str, Any]] = []
        if val_loader is not None and val_ds is not None:
            metrics, detections = _validate(evaluated, val_loader, val_ds, device, ctx, options)
            if cosine is None:
                plateau.step(metrics.get(options.select_on), warming_up=warmup is not None)
        score = metrics.get(options.select_on) or 0.0
        improved = val_ds is None or score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, best_val=metrics)
        speed = result.images_per_s * ctx.world_size
        speeds.append(speed)
        peak = max(peak, peak_memory_bytes(device))
        if ctx.is_main and log is not None:
            best_so_far = {"val": state["best_val"], "best_epoch": state["best_epoch"]}
            info = recipe.model_info(options, class_set, best_so_far)
            if improved:
                save_checkpoint(options.out / BEST, evaluated, info, **extra)
            save_checkpoint(
                options.out / LAST,
                evaluated,
                info,
                **extra,
                **recipe.resume_state(model, ema, cosine),
                epoch=epoch,
                optimizer=optimizer.state_dict(),
                plateau=plateau.state_dict(),
                scaler=scaler.state_dict(),
                **{k: v for k, v in state.items() if k != "epoch"},
            )
            log.epoch(
                epoch,
                {
                    **{f"train/{k}": v for k, v in result.losses.items()},
                    "train/lr": result.lr,
                    "perf/images_per_s": speed,
                    "perf/peak_memory_mib": peak / 2**20,
                    "perf/epoch_seconds": result.seconds,
                    **metric_columns("val", metrics),
                },
            )
            if val_ds is not None and options.val_images:
                threshold = recipe.score_threshold(options, metrics)
                shown = _samples(val_ds, detections, options.val_images, threshold, class_set)
                log.images(epoch, shown)
            logger.info(
                "epoch %d/%d: loss %.4f, %.1f images/s, peak memory %.0f MiB, val %s%s",
                epoch + 1,
                options.epochs,
                result.losses.get("loss", float("nan")),
                speed,
                peak / 2**20,
                format_metrics(metrics) if metrics else "-",
                " (best so far)" if improved else "",
            )
        distributed.barrier(ctx)
    if log is not None:
        log.close()
    return _finish(options, ctx, device, model, class_set, state, speeds, peak)


def _finish(
    options: TrainOptions,
    ctx: distributed.Context,
    device: torch.device,
    model: torch.nn.Module,
    class_set: ClassSet,
    state: dict[str, Any],
    speeds: list[float],
    peak: int,
) -> TrainResult:
    """Reload the best epoch, score it on the test split if any, and record the outcome."""
    best_path = options.out / BEST
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    test_metrics = None
    if options.test_annotations is not None:
        test_ds = TacoDataset(
            read_coco(options.test_annotations),
            options.images,
            class_set.scored(),
            eval_transforms(*options.input_size),
        )
        test_metrics, _ = _validate(
            model, recipe.loader(test_ds, options, ctx, train=False), test_ds, device, ctx, options
        )
    images_per_s = sum(speeds) / len(speeds) if speeds else 0.0
    summary = {
        "best_epoch": best.get("metrics", {}).get("best_epoch", state["best_epoch"]),
        "val": best.get("metrics", {}).get("val", state["best_val"]),
        "test": test_metrics,
        "images_per_s": images_per_s,
        "peak_memory_bytes": peak,
        "classes": list(class_set.classes),
        "checkpoint": str(best_path),
    }
    if ctx.is_main:
        metrics = {k: summary[k] for k in ("val", "test", "best_epoch")}
        info = recipe.model_info(options, class_set, metrics)
        card = model_card.build_card(options, class_set, info, summary)
        save_checkpoint(
            best_path,
            model,
            info,
            card=card,
            class_set=class_set.to_dict(),
            options=options.to_dict(),
            score_threshold_source=recipe.score_threshold_source(options, metrics["val"]),
        )
        summary["score_threshold"] = info.score_threshold
        write_json(summary, options.out / METRICS, indent=2)
        model_card.write_card(card, options.out)
        if test_metrics:
            logger.info("test: %s", format_metrics(test_metrics))
    distributed.barrier(ctx)
    return TrainResult(
        best_path, summary["best_epoch"], summary["val"], test_metrics, images_per_s, peak
    )
