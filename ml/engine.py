"""One training epoch and one evaluation pass; no argument parsing and no file I/O here."""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from ml.inference import AUTOCAST_DTYPES, resolve_precision

logger = logging.getLogger(__name__)

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training cannot recover from that on its own."""


@dataclass(frozen=True)
class EpochResult:
    """Mean losses of an epoch and how fast it went."""

    losses: dict[str, float]
    images: int
    seconds: float
    lr: float

    @property
    def images_per_s(self) -> float:
        """Training throughput over the whole epoch, data loading included."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _to_device(batch: Batch, device: torch.device) -> Batch:
    images, targets = batch
    images = [img.to(device, non_blocking=True) for img in images]
    moved = [
        {
            "boxes": t["boxes"].as_subclass(torch.Tensor).to(device, non_blocking=True),
            "labels": t["labels"].to(device, non_blocking=True),
        }
        for t in targets
    ]
    return images, moved


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Batch],
    device: torch.device,
    *,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    accumulate: int = 1,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip_grad: float | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress: bool = True,
) -> EpochResult:
    """Train for one pass over `loader`; steps the optimizer every `accumulate` batches.

    Each optimizer step follows the mean gradient of its batches, the last, shorter group's
    too, and is followed by one step of `schedule` (the warm-up, or the cosine) and one
    update of `ema`. Under DDP every rank learns of a non-finite loss on any rank, and all of
    them stop.
    """
    model.train()
    use_amp = scaler is not None and scaler.is_enabled()
    sums: dict[str, float] = defaultdict(float)
    steps = images_seen = 0
    start = time.perf_counter()
    total = len(loader) if isinstance(loader, Sized) else None
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}", disable=not progress, leave=False)
    optimizer.zero_grad(set_to_none=True)
    distributed = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    for i, batch in enumerate(bar):
        images, targets = _to_device(batch, device)
        stepping = (i + 1) % accumulate == 0 or (total is not None and i + 1 == total)
        group_start = i - i % accumulate
        group = accumulate if total is None else min(accumulate, total - group_start)
        # Under DDP, gradients sync only on the micro-batch that steps.
        sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if not stepping and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            sync = model.no_sync()
        with sync:
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss_dict = model(images, targets)
            loss = sum(loss_dict.values())
            value = float(loss.detach())
            finite = math.isfinite(value)
            if distributed and not _all_finite(finite, device) and finite:
                # Another rank's loss is not finite: its gradients would never arrive.
                raise NonFiniteLossError(
                    f"a non-finite loss on another process at epoch {epoch}, batch {i}; "
                    "lower the learning rate or check the annotations it names"
                )
            if not finite:
                parts = {k: float(v.detach()) for k, v in loss_dict.items()}
                raise NonFiniteLossError(
                    f"loss is {value} at epoch {epoch}, batch {i} (image ids "
                    f"{[t['image_id'] for t in batch[1]]}): {parts}; lower the learning rate "
                    "or check these annotations"
                )
            scaled = loss / group
            if use_amp and scaler is not None:
                scaler.scale(scaled).backward()
            else:
                scaled.backward()
        if stepping:
            _step(model, optimizer, scaler if use_amp else None, clip_grad)
            if schedule is not None:
                schedule.step()
            if ema is not None:
                ema.update_parameters(model)  # under DDP, the same tensors as its module's
        for name, part in loss_dict.items():
            sums[name] += float(part.detach())
        sums["loss"] += value
        steps += 1
        images_seen += len(images)
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    seconds = time.perf_counter() - start
    losses = {k: v / max(steps, 1) for k, v in sums.items()}
    return EpochResult(losses, images_seen, seconds, optimizer.param_groups[0]["lr"])


def _all_finite(finite: bool, device: torch.device) -> bool:
    """Whether every DDP rank's loss is finite (each rank passes its own)."""
    flag = torch.tensor([1.0 if finite else 0.0], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)


def _step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    clip_grad: float | None,
) -> None:
    if scaler is not None:
        if clip_grad:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(optimizer)
        scaler.update()
    else:
        if clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# The normalisation layers whose running statistics training updates.
BatchNorm = (
    torch.nn.BatchNorm1d | torch.nn.BatchNorm2d | torch.nn.BatchNorm3d | torch.nn.SyncBatchNorm
)


def batchnorm_layers(model: torch.nn.Module) -> list[BatchNorm]:
    """BatchNorm layers that keep running statistics (FrozenBatchNorm2d is not one)."""
    return [m for m in model.modules() if isinstance(m, BatchNorm) and m.track_running_stats]


@torch.no_grad()  # not inference_mode: the statistics must stay ordinary tensors for training
def recalibrate_batchnorm(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    batches: int,
    *,
    amp: bool = False,
) -> int:
    """Recompute BatchNorm running statistics as a plain average over `batches` batches.

    Running averages lag behind weights that change fast (training from scratch, high
    learning rates), so evaluation would see statistics of an older model ("precise BN").
    Returns how many batches were used.
    """
    norms = batchnorm_layers(model)
    if not norms or batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = model.training
    model.train()
    used = 0
    try:
        for batch in loader:
            if used == batches:
                break
            images, targets = _to_device(batch, device)
            with torch.autocast(device_type=device.type, enabled=amp):
                model(images, targets)  # the losses are discarded; only statistics change
            used += 1
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return used


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    *,
    amp: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Detections per image, boxes mapped back to the annotation's pixel coordinates.

    `amp` runs in the precision the workers use on this device (bf16 where supported).
    """
    precision = resolve_precision("auto", device) if amp else "fp32"
    dtype = AUTOCAST_DTYPES.get(precision)
    model.eval()
    results: list[dict[str, Any]] = []
    total = len(loader) if isinstance(loader, Sized) else None
    bar = tqdm(loader, total=total, desc="eval", disable=not progress, leave=False)
    for images, targets in bar:
        inputs = [img.to(device, non_blocking=True) for img in images]
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(inputs)
        for image, target, out in zip(images, targets, outputs, strict=True):
            orig_h, orig_w = target["orig_size"]
            # The dataset resized the image; COCO ground truth is in the original pixels.
            scale = torch.tensor(
                [orig_w / image.shape[-1], orig_h / image.shape[-2]] * 2, dtype=torch.float32
            )
            results.append(
                {
                    "image_id": target["image_id"],
                    "boxes": (out["boxes"].float().cpu() * scale).tolist(),
                    "scores": out["scores"].float().cpu().tolist(),
                    "labels": out["labels"].cpu().tolist(),
                }
            )
    return results


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory measurement on CUDA (CPU peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB
