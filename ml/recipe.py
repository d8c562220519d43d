"""What a training run is made of, from TrainOptions: data, loaders, model, optimizer."""

from __future__ import annotations

import dataclasses
import logging
import random
from datetime import UTC, datetime
from typing import Any

import torch

from ml import distributed
from ml.categories import ClassSet, load_class_set
from ml.data import GroupedBatchSampler, TacoDataset, collate
from ml.data.coco_file import read_coco
from ml.detector import ModelInfo
from ml.splits import holdout, presence_matrix
from ml.train_options import TrainOptions
from ml.transforms import AugmentOptions, eval_transforms, train_transforms
from ml.weights import freeze_batchnorm, initial_model

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (DataLoader workers derive their seeds from torch's)."""
    random.seed(seed)
    torch.manual_seed(seed)


def datasets(options: TrainOptions) -> tuple[TacoDataset, TacoDataset | None, ClassSet]:
    """Training and validation datasets and the class set; validation may be carved out."""
    data = read_coco(options.annotations)
    class_set = load_class_set(options.classes, data["categories"])
    augment = AugmentOptions(
        options.hflip, options.vflip, options.scale_jitter, options.photometric
    )
    train_tf = train_transforms(options.min_size, options.max_size, augment)
    eval_tf = eval_transforms(options.min_size, options.max_size)
    images, keep_empty = options.images, options.keep_empty
    if options.val_annotations is not None:
        train = TacoDataset(data, images, class_set, train_tf, keep_empty=keep_empty)
        val = TacoDataset(read_coco(options.val_annotations), images, class_set, eval_tf)
        return train, val, class_set
    if options.val_fraction <= 0:
        logger.warning("no validation split: the last epoch is kept, chosen on nothing")
        train = TacoDataset(data, images, class_set, train_tf, keep_empty=keep_empty)
        return train, None, class_set
    ids, matrix = presence_matrix(data, class_set)
    train_ids, val_ids = holdout(ids, matrix, options.val_fraction, options.seed)
    train = TacoDataset(
        data, images, class_set, train_tf, image_ids=train_ids, keep_empty=keep_empty
    )
    return train, TacoDataset(data, images, class_set, eval_tf, image_ids=val_ids), class_set


def loader(
    dataset: TacoDataset, options: TrainOptions, ctx: distributed.Context, train: bool
) -> torch.utils.data.DataLoader:
    """Shuffled aspect-grouped training batches, or this rank's share of evaluation images."""
    common: dict[str, Any] = {
        "collate_fn": collate,
        "num_workers": options.workers,
        "persistent_workers": options.workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }
    if not train:
        # Each rank evaluates every world_size-th image; the results are gathered after.
        shard = torch.utils.data.Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))
        return torch.utils.data.DataLoader(shard, batch_size=options.batch_size, **common)
    generator = torch.Generator().manual_seed(options.seed)
    if ctx.distributed:
        sampler: torch.utils.data.Sampler[int] = torch.utils.data.DistributedSampler(
            dataset, ctx.world_size, ctx.rank, shuffle=True, seed=options.seed
        )
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
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
    model = initial_model(
        options.model,
        class_set.num_classes,
        weights=options.weights,
        min_size=options.min_size,
        max_size=options.max_size,
        trainable_backbone_layers=options.trainable_backbone_layers,
        **knobs,
    )
    if options.freeze_bn:
        logger.info("froze %d BatchNorm layers", freeze_batchnorm(model))
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
    if remaining <= 0:
        return None
    # Linear from 0.1% of the learning rate; stepped once per optimizer step.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, 0.001 + (done + step) / options.warmup_iters)
    )


def with_version(options: TrainOptions) -> TrainOptions:
    """Options whose version is fixed: the start time unless --version named one."""
    if options.version:
        return options
    return dataclasses.replace(options, version=datetime.now(UTC).strftime("%Y%m%d%H%M%S"))


def model_info(options: TrainOptions, class_set: ClassSet, metrics: dict[str, Any]) -> ModelInfo:
    """The self-description saved with the weights."""
    return ModelInfo(
        arch=options.model,
        class_names=class_set.classes,
        name=options.name,
        version=options.version or "0",
        score_threshold=options.score_threshold,
        min_size=options.min_size,
        max_size=options.max_size,
        metrics=metrics,
    )
