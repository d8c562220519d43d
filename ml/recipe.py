"""What a training run is made of, from TrainOptions: data, loaders, model, optimizer."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ml import distributed
from ml.categories import ClassSet, load_class_set
from ml.data import GroupedBatchSampler, TacoDataset, collate
from ml.data.coco_file import read_coco, read_training_coco
from ml.data.sampler import RepeatFactorSampler, repeat_factors
from ml.detector import ModelInfo
from ml.splits import holdout, presence_matrix
from ml.train_options import TrainOptions
from ml.transforms import AugmentOptions, RandomBoxCrop, eval_transforms, train_transforms
from ml.weights import NO_WEIGHTS, initial_model, resolve_bn

logger = logging.getLogger(__name__)

# Where validation chose nothing (no validation split, or no detections at all).
DEFAULT_SCORE_THRESHOLD = 0.5


def seed_everything(seed: int) -> None:
    """Seed Python and torch (DataLoader workers derive their seeds from torch's)."""
    random.seed(seed)
    torch.manual_seed(seed)


def start_epoch(loader: torch.utils.data.DataLoader, epoch: int, seed: int) -> None:
    """Put the image order and every random draw where epoch `epoch` of this seed has them.

    A function of (seed, epoch) alone, so a resumed run continues with the next epoch's
    order and augmentation instead of replaying the first one's.
    """
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if isinstance(sampler, torch.utils.data.DistributedSampler | RepeatFactorSampler):
        sampler.set_epoch(epoch)
    seed_everything(seed * 100_003 + epoch + 1)


def model_class_set(options: TrainOptions, categories: list[dict[str, Any]]) -> ClassSet:
    """The classes the model predicts: the class set, plus 'other litter' if asked."""
    class_set = load_class_set(options.classes, categories)
    return class_set.with_other() if options.other_litter else class_set


def datasets(options: TrainOptions) -> tuple[TacoDataset, TacoDataset | None, ClassSet]:
    """Training and validation datasets and the model's class set; validation may be carved out.

    Training sees boxes outside the class set as 'other litter' or not at all (their images
    left out); validation scores the class set itself, with those boxes as ignore regions.
    """
    data = read_training_coco(options.annotations, options.extra_annotations)
    class_set = model_class_set(options, data["categories"])
    scored = class_set.scored()
    augment = AugmentOptions(
        options.hflip, options.vflip, options.scale_jitter, options.photometric
    )
    crop = RandomBoxCrop(options.crop_size, options.crop_anywhere) if options.crop_size else None
    # Training images are stored at the largest size; the model's own resize draws the
    # multi-scale size of each (see `model`).
    train_tf = train_transforms(*options.input_size, augment, crop)
    eval_tf = eval_transforms(*options.input_size)
    images = options.images
    train_kw: dict[str, Any] = {"keep_empty": options.keep_empty, "drop_outside": True}
    if options.val_annotations is not None:
        train = TacoDataset(data, images, class_set, train_tf, **train_kw)
        val = TacoDataset(read_coco(options.val_annotations), images, scored, eval_tf)
        return train, val, class_set
    if options.val_fraction <= 0:
        logger.warning("no validation split: the last epoch is kept, chosen on nothing")
        train = TacoDataset(data, images, class_set, train_tf, **train_kw)
        return train, None, class_set
    ids, matrix = presence_matrix(data, scored)
    train_ids, val_ids = holdout(ids, matrix, options.val_fraction, options.seed)
    train = TacoDataset(data, images, class_set, train_tf, image_ids=train_ids, **train_kw)
    return train, TacoDataset(data, images, scored, eval_tf, image_ids=val_ids), class_set


def eval_loader(
    dataset: TacoDataset, batch_size: int, workers: int, ctx: distributed.Context | None = None
) -> torch.utils.data.DataLoader:
    """This rank's share of `dataset`, in batches of equally sized images only.

    Padding an image to a larger one's shape changes its detections, so metrics would
    depend on the batch size; equal sizes pad alike, as a batch of one does.
    """
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    # Each rank evaluates every world_size-th image; the results are gathered after.
    shard = list(range(rank, len(dataset), world))
    batches = GroupedBatchSampler(shard, dataset.size_groups(), batch_size)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def loader(
    dataset: TacoDataset, options: TrainOptions, ctx: distributed.Context, train: bool
) -> torch.utils.data.DataLoader:
    """Shuffled aspect-grouped training batches, or this rank's share of evaluation images.

    The training order is a function of (seed, epoch): `start_epoch` sets it.
    """
    if not train:
        return eval_loader(dataset, options.batch_size, options.workers, ctx)
    common: dict[str, Any] = {
        "collate_fn": collate,
        "num_workers": options.workers,
        "persistent_workers": options.workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    # One process is rank 0 of 1: the same epoch-seeded permutation either way.
    sampler: torch.utils.data.Sampler[int] = torch.utils.data.DistributedSampler(
        dataset, ctx.world_size, ctx.rank, shuffle=True, seed=options.seed
    )
    if options.repeat_threshold > 0:
        factors = repeat_factors(
            [set(r.labels.tolist()) for r in dataset.records], options.repeat_threshold
        )
        sampler = RepeatFactorSampler(factors, ctx.world_size, ctx.rank, seed=options.seed)
        logger.info(
            "repeat-factor sampling (threshold %g): %d of %d images repeated, %.0f per epoch",
            options.repeat_threshold,
            sum(f > 1 for f in factors),
            len(factors),
            sum(factors),
        )
    batches = GroupedBatchSampler(
        sampler, dataset.aspect_groups(), options.batch_size, equal_length=ctx.distributed
    )
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, **common)


def model(options: TrainOptions, class_set: ClassSet, device: torch.device) -> torch.nn.Module:
    """The detector to train, initialised as --weights says, on `device`."""
    knobs: dict[str, Any] = {}
    if options.rois_per_image:
        knobs["box_batch_size_per_image"] = options.rois_per_image
    if options.rpn_proposals:
        knobs["rpn_pre_nms_top_n_train"] = options.rpn_proposals
        knobs["rpn_post_nms_top_n_train"] = options.rpn_proposals
    bn = resolve_bn(
        options.bn,
        pretrained=options.weights != NO_WEIGHTS,
        batch_size=options.batch_size,
        # SyncBatchNorm needs CUDA: DDP on CPU (gloo) trains per-process statistics.
        distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.type == "cuda",
    )
    model = initial_model(
        options.model,
        class_set.num_classes,
        weights=options.weights,
        min_size=options.input_size[0],
        max_size=options.max_size,
        trainable_backbone_layers=options.trainable_backbone_layers,
        bn=bn,
        **knobs,
    )
    # Multi-scale training: in train mode GeneralizedRCNNTransform resizes each image to one
    # of these sizes, drawn from torch's generator; in eval mode it uses the last (largest).
    cast(GeneralizedRCNNTransform, model.transform).min_size = options.min_size
    return model.to(device)


def optimizer(options: TrainOptions, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (default) or SGD with momentum over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if options.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
        )
    raise ValueError(f"unknown optimizer {options.optimizer!r}; choose adamw or sgd")


def warmup(
    options: TrainOptions, optimizer: torch.optim.Optimizer, done: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """Linear warm-up over the first --warmup-iters optimizer steps still to run, if any."""
    remaining = options.warmup_iters - done
    if remaining <= 0 or options.schedule != "plateau":
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_factor(done + step, options.warmup_iters)
    )


def _warmup_factor(step: int, iters: int) -> float:
    """Linear from 0.1% of the learning rate to all of it after `iters` optimizer steps."""
    return min(1.0, 0.001 + step / iters)


def slicing(options: TrainOptions) -> dict[str, Any]:
    """The slice settings a checkpoint carries: --slice (0: off), else the training crops'
    side (0 without crops: off)."""
    size = options.crop_size if options.slice_size is None else options.slice_size
    return {"size": size, "overlap": options.slice_overlap}


def optimizer_steps(loader: torch.utils.data.DataLoader, epochs: int, accumulate: int) -> int:
    """Optimizer steps of a whole run; epochs differ in length under repeat-factor sampling."""
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if not isinstance(sampler, RepeatFactorSampler):
        return epochs * math.ceil(len(loader) / accumulate)
    total = 0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # only fixes which images repeat; start_epoch sets it again
        total += math.ceil(len(loader) / accumulate)
    sampler.set_epoch(0)
    return total


def cosine(
    options: TrainOptions, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """--schedule cosine: linear warm-up, then a cosine to --lr-floor; stepped per optimizer step.

    A closed form of the step count, whose state is that count alone: a run resumed with
    another --epochs follows its new length, and steps past the end stay at the floor
    (CosineAnnealingLR's recursive form would climb back up).
    """
    if options.schedule != "cosine":
        return None
    warm, floor = options.warmup_iters, options.lr_floor
    decay = max(1, total_steps - warm)

    def factor(step: int) -> float:
        if step < warm:
            return _warmup_factor(step, warm)
        done = min(1.0, (step - warm) / decay)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ema(
    options: TrainOptions, model: torch.nn.Module
) -> torch.optim.swa_utils.AveragedModel | None:
    """--ema: the weights' exponential moving average, BatchNorm statistics included."""
    if options.ema <= 0:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model,
        multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(options.ema),
        use_buffers=True,
    )


def with_version(options: TrainOptions) -> TrainOptions:
    """Options whose version is fixed: the start time unless --version named one."""
    if options.version:
        return options
    return dataclasses.replace(options, version=datetime.now(UTC).strftime("%Y%m%d%H%M%S"))


def score_threshold(options: TrainOptions, val_metrics: dict[str, Any] | None) -> float:
    """--score-threshold if given, else the best-F1 threshold on validation, else 0.5."""
    if options.score_threshold is not None:
        return options.score_threshold
    chosen = (val_metrics or {}).get("best_f1")
    return float(chosen["threshold"]) if chosen else DEFAULT_SCORE_THRESHOLD


def score_threshold_source(options: TrainOptions, val_metrics: Mapping[str, Any] | None) -> str:
    """Where score_threshold's value came from, in words (the checkpoint and card say it)."""
    if options.score_threshold is not None:
        return "option --score-threshold"
    if (val_metrics or {}).get("best_f1"):
        return "best F1 at IoU 0.5 on the validation split"
    return f"default {DEFAULT_SCORE_THRESHOLD} (no validation detections)"


def model_info(options: TrainOptions, class_set: ClassSet, metrics: dict[str, Any]) -> ModelInfo:
    """The self-description saved with the weights; the threshold follows metrics["val"]."""
    return ModelInfo(
        arch=options.model,
        class_names=class_set.classes,
        name=options.name,
        version=options.version or "0",
        score_threshold=score_threshold(options, metrics.get("val")),
        min_size=options.input_size[0],
        max_size=options.max_size,
        metrics=metrics,
        slicing=slicing(options),
    )


class Plateau:
    """ReduceLROnPlateau on the validation metric, counting only once learning has started.

    A run from scratch or with a new head scores 0.000 for its first epochs; counting those
    as a plateau would cut the rate before anything was learnt. Epochs count from the first
    with a positive score after the warm-up.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int) -> None:
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=factor, patience=patience
        )
        self.started = False

    def step(self, score: float | None, *, warming_up: bool = False) -> None:
        """Record one epoch's validation score."""
        if not self.started and (warming_up or not score):
            return
        self.started = True
        self.plateau.step(score or 0.0)

    def state_dict(self) -> dict[str, Any]:
        """For last.pt."""
        return {"plateau": self.plateau.state_dict(), "started": self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """From last.pt."""
        self.plateau.load_state_dict(state["plateau"])
        self.started = bool(state["started"])


def plateau(options: TrainOptions, optimizer: torch.optim.Optimizer) -> Plateau:
    """The learning-rate schedule stepped once per epoch on the validation metric."""
    return Plateau(optimizer, options.lr_factor, options.lr_patience)


def resume_state(
    model: torch.nn.Module,
    ema: torch.optim.swa_utils.AveragedModel | None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
) -> dict[str, Any]:
    """What last.pt holds, beyond the weights it serves, for --ema and --schedule cosine.

    With --ema the checkpoint's `state_dict` is the average (what is evaluated and served);
    the weights being trained travel as `train_state_dict`.
    """
    state: dict[str, Any] = {}
    if ema is not None:
        state["train_state_dict"] = model.state_dict()
        state["ema_updates"] = int(ema.n_averaged)
    if schedule is not None:
        state["lr_schedule"] = schedule.state_dict()
    return state


def load_resume_state(
    state: dict[str, Any],
    model: torch.nn.Module,
    ema: torch.optim.swa_utils.AveragedModel | None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
) -> None:
    """Restore what `resume_state` and the checkpoint's weights saved."""
    model.load_state_dict(state.get("train_state_dict", state["state_dict"]))
    if ema is not None:
        if "ema_updates" in state:
            ema.module.load_state_dict(state["state_dict"])
            ema.n_averaged.fill_(int(state["ema_updates"]))
        else:
            logger.warning("--ema: the run resumed kept no average; it starts from its weights")
            ema.update_parameters(model)
    if schedule is not None and "lr_schedule" in state:
        schedule.load_state_dict(state["lr_schedule"])
