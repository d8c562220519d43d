"""Where training starts (random, torchvision's COCO weights, a local file) and what trains.

Every weights source goes through one path: build the architecture untrained, copy in the
tensors of the source that fit, then apply the same stage freezing and BatchNorm policy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ml.detector import ARCHITECTURES, CHECKPOINT_FORMAT, build_model

logger = logging.getLogger(__name__)

NO_WEIGHTS = "none"
TORCHVISION_WEIGHTS = "torchvision"
# Below this share of matching tensors a file is for another architecture, not a warm start.
_MIN_MATCHED = 0.9
# torchvision's default for pretrained backbones: the last three stages train.
DEFAULT_TRAINABLE_STAGES = 3
# Per-process batch below which BatchNorm statistics of a pretrained backbone are too noisy
# to update (detectron2 and torchvision's references freeze them at 2-4 images per GPU).
MIN_BATCH_FOR_BN = 8

BatchNormPolicy = Literal["auto", "frozen", "train", "sync"]


class WeightsError(ValueError):
    """A weights file cannot initialise the chosen architecture."""


def resolve_bn(policy: str, *, pretrained: bool, batch_size: int, distributed: bool) -> str:
    """The BatchNorm policy `auto` stands for; the others as given.

    From scratch nothing is worth freezing: statistics train (synchronised across processes
    under DDP). From pretrained weights they train only when a batch is large enough to
    estimate them, else they stay as the weights brought them.
    """
    if policy != "auto":
        return policy
    if pretrained and batch_size < MIN_BATCH_FOR_BN:
        return "frozen"
    return "sync" if distributed else "train"


def _coco_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's COCO weights of `arch`, from TORCH_HOME's cache or downloaded there."""
    _, coco = ARCHITECTURES[arch]
    try:
        return coco.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise WeightsError(
            f"torchvision's COCO weights for {arch} are neither cached under TORCH_HOME nor "
            f"downloadable ({exc}); pass --weights PATH to a copy of the .pth file, "
            "or --weights none"
        ) from exc


def initial_model(
    arch: str,
    num_classes: int,
    *,
    weights: str,
    min_size: int,
    max_size: int,
    trainable_backbone_layers: int | None = None,
    bn: str = "frozen",
    **kwargs: Any,
) -> torch.nn.Module:
    """Build `arch` for `num_classes` (with background) from `weights`: none, torchvision, a path.

    `bn` is a resolved policy (see `resolve_bn`): frozen, train or sync. Backbone stages
    outside the `trainable_backbone_layers` last ones are frozen, BatchNorm included, for
    every pretrained source alike; from scratch everything trains. `kwargs` go to
    torchvision's FasterRCNN (e.g. training-only sampling sizes).
    """
    if weights not in (NO_WEIGHTS, TORCHVISION_WEIGHTS) and not Path(weights).is_file():
        raise WeightsError(
            f"--weights must be {NO_WEIGHTS!r}, {TORCHVISION_WEIGHTS!r} or an existing file; "
            f"{weights!r} is none of these"
        )
    model = build_model(arch, num_classes, min_size=min_size, max_size=max_size, **kwargs)
    if weights == NO_WEIGHTS:
        if trainable_backbone_layers is not None:
            logger.warning("--trainable-backbone-layers is ignored from scratch: all stages train")
        stages = None
    else:
        if weights == TORCHVISION_WEIGHTS:
            load_state_dict(model, _coco_state_dict(arch), f"torchvision's COCO {arch}")
        else:
            load_weights_file(model, Path(weights))
        stages = (
            DEFAULT_TRAINABLE_STAGES
            if trainable_backbone_layers is None
            else trainable_backbone_layers
        )
    frozen_stages = freeze_backbone_stages(model, stages) if stages is not None else 0
    if bn == "frozen":
        count = freeze_batchnorm(model)
    elif bn == "sync":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        count = 0
    elif bn == "train":
        count = 0
    else:
        raise ValueError(f"unknown BatchNorm policy {bn!r}; choose frozen, train or sync")
    logger.info(
        "weights %s: %d backbone stage(s) frozen, BatchNorm %s (%d layers frozen)",
        weights,
        frozen_stages,
        bn,
        count,
    )
    return model


def backbone_stages(model: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """The backbone body's stages, input first, as torchvision counts trainable layers."""
    body = model.get_submodule("backbone.body")
    children = dict(body.named_children())
    if "layer1" in children:  # ResNet: conv1 + bn1 is the first stage, then layer1..4
        return [[children["conv1"], children["bn1"]]] + [
            [children[f"layer{i}"]] for i in range(1, 5)
        ]
    # MobileNetV3: stages start at the strided blocks (torchvision's `_is_cn`).
    blocks = list(children.values())
    starts = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)]
    starts.append(len(blocks) - 1)
    bounds = starts[1:] + [len(blocks)]
    return [blocks[a:b] for a, b in zip(starts, bounds, strict=True)]


def freeze_backbone_stages(model: torch.nn.Module, trainable: int) -> int:
    """Freeze all but the last `trainable` stages: no gradients and fixed BatchNorm statistics.

    Returns how many stages were frozen.
    """
    stages = backbone_stages(model)
    if not 0 <= trainable <= len(stages):
        raise WeightsError(
            f"--trainable-backbone-layers must be in 0..{len(stages)} for this model, "
            f"not {trainable}"
        )
    frozen = stages[: len(stages) - trainable]
    for stage in frozen:
        for module in stage:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
    # A BatchNorm in a frozen stage would still move its running statistics in train mode.
    body = model.get_submodule("backbone.body")
    frozen_ids = {id(m) for stage in frozen for m in stage}
    for name, child in list(body.named_children()):
        if id(child) in frozen_ids:
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(body, name, _frozen_copy(child))
            else:
                freeze_batchnorm(child)
    return len(frozen)


def load_state_dict(
    model: torch.nn.Module, source: dict[str, torch.Tensor], origin: str
) -> list[str]:
    """Copy every tensor of `source` whose name and shape fit; returns the names left untouched.

    The class-specific predictor never fits weights trained for other classes; it keeps its
    fresh initialisation.
    """
    target = model.state_dict()
    fitting = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    untouched = [k for k in target if k not in fitting]
    meaningful = [k for k in target if not k.endswith("num_batches_tracked")]
    matched = sum(1 for k in meaningful if k in fitting)
    if matched < _MIN_MATCHED * len(meaningful):
        raise WeightsError(
            f"{origin} fits only {matched} of {len(meaningful)} tensors of this model; "
            "is it for another --model?"
        )
    model.load_state_dict(fitting, strict=False)
    logger.info(
        "initialised %d of %d tensors from %s; fresh: %s",
        matched,
        len(meaningful),
        origin,
        sorted({k.rsplit(".", 1)[0] for k in untouched if not k.endswith("num_batches_tracked")}),
    )
    return untouched


def _state_dict_in(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return payload["state_dict"]  # an earlier trashmap model, e.g. to fine-tune further
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        return payload["model"]  # torchvision reference-script checkpoints
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload  # a plain state dict, as torchvision's hub files are
    raise WeightsError(f"{path} holds no state dict this code recognises")


def load_weights_file(model: torch.nn.Module, path: Path) -> list[str]:
    """Copy the tensors of a weights file that fit `model` (see `load_state_dict`)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} cannot be read as torch weights: {exc}") from exc
    return load_state_dict(model, _state_dict_in(payload, path), str(path))


def _frozen_copy(child: torch.nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
    with torch.no_grad():
        if child.affine:
            frozen.weight.copy_(child.weight)
            frozen.bias.copy_(child.bias)
        if child.running_mean is not None and child.running_var is not None:
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
    return frozen.to(child.weight.device if child.affine else "cpu")


def freeze_batchnorm(module: torch.nn.Module) -> int:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with its statistics."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, _frozen_copy(child))
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count
