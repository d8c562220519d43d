"""Where training starts: random, torchvision's COCO weights, or a local weights file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ml.detector import CHECKPOINT_FORMAT, build_model

logger = logging.getLogger(__name__)

NO_WEIGHTS = "none"
TORCHVISION_WEIGHTS = "torchvision"
# Below this share of matching tensors a file is for another architecture, not a warm start.
_MIN_MATCHED = 0.9


class WeightsError(ValueError):
    """A weights file cannot initialise the chosen architecture."""


def initial_model(
    arch: str,
    num_classes: int,
    *,
    weights: str,
    min_size: int,
    max_size: int,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build `arch` for `num_classes` (with background) from `weights`: none, torchvision, a path.

    `kwargs` go to torchvision's FasterRCNN (e.g. training-only sampling sizes).
    """
    if weights == NO_WEIGHTS:
        return build_model(arch, num_classes, min_size=min_size, max_size=max_size, **kwargs)
    if weights == TORCHVISION_WEIGHTS:
        extra: dict[str, Any] = dict(kwargs)
        if trainable_backbone_layers is not None:
            extra["trainable_backbone_layers"] = trainable_backbone_layers
        try:
            return build_model(
                arch, num_classes, min_size=min_size, max_size=max_size, weights="coco", **extra
            )
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise WeightsError(
                f"torchvision's COCO weights for {arch} are neither cached under TORCH_HOME nor "
                f"downloadable ({exc}); pass --weights PATH to a copy of the .pth file, "
                "or --weights none"
            ) from exc
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"--weights must be {NO_WEIGHTS!r}, {TORCHVISION_WEIGHTS!r} or an existing file; "
            f"{weights!r} is none of these"
        )
    model = build_model(arch, num_classes, min_size=min_size, max_size=max_size, **kwargs)
    load_weights_file(model, path)
    # torchvision freezes the backbone's BatchNorm when it starts from pretrained weights;
    # a warm start from a file gets the same, so small batches do not wreck the statistics.
    frozen = freeze_batchnorm(model.get_submodule("backbone.body"))
    logger.info("froze %d BatchNorm layers of the pretrained backbone", frozen)
    return model


def _state_dict_in(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return payload["state_dict"]  # an earlier trashmap model, e.g. to fine-tune further
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        return payload["model"]  # torchvision reference-script checkpoints
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload  # a plain state dict, as torchvision's hub files are
    raise WeightsError(f"{path} holds no state dict this code recognises")


def load_weights_file(model: torch.nn.Module, path: Path) -> list[str]:
    """Copy every tensor of `path` whose name and shape fit; returns the names left untouched.

    The class-specific predictor never fits a file trained for other classes; it keeps its
    fresh initialisation.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} cannot be read as torch weights: {exc}") from exc
    source = _state_dict_in(payload, path)
    target = model.state_dict()
    fitting = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    untouched = [k for k in target if k not in fitting]
    meaningful = [k for k in target if not k.endswith("num_batches_tracked")]
    matched = sum(1 for k in meaningful if k in fitting)
    if matched < _MIN_MATCHED * len(meaningful):
        raise WeightsError(
            f"{path} fits only {matched} of {len(meaningful)} tensors of this model; "
            "is it for another --model?"
        )
    model.load_state_dict(fitting, strict=False)
    logger.info(
        "initialised %d of %d tensors from %s; fresh: %s",
        matched,
        len(meaningful),
        path,
        sorted({k.rsplit(".", 1)[0] for k in untouched if not k.endswith("num_batches_tracked")}),
    )
    return untouched


def freeze_batchnorm(module: torch.nn.Module) -> int:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with its statistics."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None and child.running_var is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen.to(child.weight.device if child.affine else "cpu"))
            count += 1
        else:
            count += freeze_batchnorm(child)
    return count
