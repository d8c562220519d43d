"""torchvision.transforms.v2 presets: the same resize for train and eval, augmentation for train.

v2 transforms move tv_tensors.BoundingBoxes together with the pixels, so no code here touches
box coordinates by hand. Images are resized to the model's input size here, once, because
decoding and augmenting 12 MP phone photos at full size is the slow part of a training step;
the model's own resize then finds them already at size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


class RandomBoxCrop(v2.Transform):
    """A `size` x `size` window of the photo at its own resolution, for training on tiles.

    The window holds one box drawn at random, whole where it fits, at a random place;
    with probability `anywhere` (and in photos without boxes) it lies anywhere. Boxes are
    cut by the crop kernel and ones cut to nothing are dropped with their labels. A photo
    smaller than `size` keeps its own side. Sliced inference with tiles of the same side
    then shows the model objects at the scale it learnt them.
    """

    def __init__(self, size: int, anywhere: float = 0.25) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"crop size must be >= 1, not {size}")
        _check_probability("anywhere", anywhere)
        self.size = size
        self.anywhere = anywhere
        self._sanitize = v2.SanitizeBoundingBoxes(min_size=1.0)

    @staticmethod
    def _start(low: float, high: float, length: int, side: int) -> int:
        """A random window start in [0, length - side] keeping [low, high) inside if it fits."""
        lowest, highest = math.ceil(high) - side, math.floor(low)
        if lowest > highest:  # the box is larger than the window: the window lies within it
            lowest, highest = highest, lowest
        lowest = min(max(lowest, 0), length - side)
        highest = min(max(highest, 0), length - side)
        return int(torch.randint(lowest, highest + 1, ()))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Where to cut: top, left, height, width in the photo's pixels."""
        height, width = v2.query_size(flat_inputs)
        side_h, side_w = min(self.size, height), min(self.size, width)
        boxes = F.convert_bounding_box_format(
            v2.get_bounding_boxes(flat_inputs), new_format=tv_tensors.BoundingBoxFormat.XYXY
        ).as_subclass(torch.Tensor)
        if len(boxes) == 0 or float(torch.rand(())) < self.anywhere:
            top = int(torch.randint(0, height - side_h + 1, ()))
            left = int(torch.randint(0, width - side_w + 1, ()))
        else:
            x1, y1, x2, y2 = boxes[int(torch.randint(0, len(boxes), ()))].tolist()
            top = self._start(y1, y2, height, side_h)
            left = self._start(x1, x2, width, side_w)
        return {"top": top, "left": left, "height": side_h, "width": side_w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Crop images and boxes alike (boxes are clamped to the window by the kernel)."""
        return self._call_kernel(F.crop, inpt, **params)

    def forward(self, *inputs: Any) -> Any:
        """Crop, then drop the boxes left outside the window (zero-area after the crop):
        the zoom-out and IoU crop that follow in train_transforms need real boxes; the final
        sanitize there covers what the resize makes degenerate."""
        return self._sanitize(super().forward(*inputs))


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
    min_size: int,
    max_size: int,
    augment: AugmentOptions = AugmentOptions(),
    crop: RandomBoxCrop | None = None,
) -> v2.Compose:
    """Crop (optional), augment, resize, drop boxes cut to nothing, convert to float."""
    for name in ("hflip", "vflip", "photometric"):
        _check_probability(name, getattr(augment, name))
    if augment.scale_jitter < 0:
        raise ValueError(f"scale_jitter must be >= 0, not {augment.scale_jitter}")
    steps: list[v2.Transform] = [v2.ToImage()]
    if crop is not None:
        steps.append(crop)
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
