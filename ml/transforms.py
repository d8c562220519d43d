"""torchvision.transforms.v2 presets: the same resize for train and eval, augmentation for train.

v2 transforms move tv_tensors.BoundingBoxes together with the pixels, so no code here touches
box coordinates by hand. Images are resized to the model's input size here, once, because
decoding and augmenting 12 MP phone photos at full size is the slow part of a training step;
the model's own resize then finds them already at size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F  # noqa: N812 (torchvision convention)

# Zoom-out canvas: a neutral grey rather than black, closer to pavement than to night.
_FILL = 114


@dataclass(frozen=True)
class AugmentOptions:
    """Training augmentation; each probability is per image."""

    hflip: float = 0.5
    vflip: float = 0.0
    scale_jitter: float = 0.0  # 0.3: zoom out to 1.3x, or crop in to 1/1.3 of a side
    photometric: float = 0.0  # chance of brightness/contrast/saturation/hue jitter


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], not {value}")


def resize(min_size: int, max_size: int) -> v2.Transform:
    """Shorter side to `min_size` unless the longer then exceeds `max_size` (the R-CNN rule)."""
    if max_size <= min_size:
        raise ValueError(f"max_size ({max_size}) must be larger than min_size ({min_size})")
    return v2.Resize(min_size, max_size=max_size, antialias=True)


def model_input(image: torch.Tensor, min_size: int, max_size: int) -> torch.Tensor:
    """A CHW photo (uint8, or float in [0, 1]) as the model is fed it: resized like
    `eval_transforms` (antialiased), as float in [0, 1].

    The one preprocessing of evaluation and the workers. Left to the model's own bilinear
    resize, a full-size photo's fine texture (gravel, grass: where cigarettes lie) aliases.
    """
    resized = resize(min_size, max_size)(tv_tensors.Image(image))
    return F.to_dtype(resized.as_subclass(torch.Tensor), torch.float32, scale=True)


def eval_transforms(min_size: int, max_size: int) -> v2.Compose:
    """Resize and convert to float, as `model_input` does; boxes follow the resize."""
    return v2.Compose(
        [
            v2.ToImage(),
            resize(min_size, max_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def train_transforms(
    min_size: int, max_size: int, augment: AugmentOptions = AugmentOptions()
) -> v2.Compose:
    """Augment, resize, drop boxes the augmentation cut to nothing, convert to float."""
    for name in ("hflip", "vflip", "photometric"):
        _check_probability(name, getattr(augment, name))
    if augment.scale_jitter < 0:
        raise ValueError(f"scale_jitter must be >= 0, not {augment.scale_jitter}")
    steps: list[v2.Transform] = [v2.ToImage()]
    if augment.photometric > 0:
        steps.append(v2.RandomPhotometricDistort(p=augment.photometric))
    if augment.scale_jitter > 0:
        # The model resizes every input to min_size, so scale only changes when the canvas
        # does: zooming out makes litter smaller, cropping in makes it larger.
        ratio = 1.0 + augment.scale_jitter
        steps.append(v2.RandomZoomOut(fill=_FILL, side_range=(1.0, ratio), p=0.5))
        steps.append(
            v2.RandomApply([v2.RandomIoUCrop(min_scale=1.0 / ratio, max_scale=1.0)], p=0.5)
        )
    if augment.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=augment.hflip))
    if augment.vflip > 0:
        steps.append(v2.RandomVerticalFlip(p=augment.vflip))
    steps += [
        resize(min_size, max_size),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(steps)
