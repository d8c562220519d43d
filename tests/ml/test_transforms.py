"""Flips, resizes and scale jitter move the boxes exactly as they move the pixels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from ml.transforms import AugmentOptions, eval_transforms, train_transforms

# Each object is drawn in its own colour channel, so its pixels can be found after transforms.
CHANNELS = 3


def _scene(width: int, height: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for channel, (x1, y1, x2, y2) in enumerate(boxes):
        image[channel, y1:y2, x1:x2] = 255
    return image


def _drawn_extent(image: torch.Tensor, channel: int) -> list[float] | None:
    mask = image[channel] > 0.5
    if not mask.any():
        return None
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def _run(transform, image: torch.Tensor, boxes: list[tuple[int, int, int, int]]):
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32),
            format="XYXY",
            canvas_size=tuple(image.shape[-2:]),
        ),
        "labels": torch.arange(1, len(boxes) + 1),
    }
    return transform(tv_tensors.Image(image), target)


def _assert_boxes_match_pixels(out_image: torch.Tensor, target: dict, tolerance: float) -> None:
    assert out_image.dtype == torch.float32
    for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
        drawn = _drawn_extent(out_image, label - 1)
        assert drawn is not None, f"box {box} of object {label} has no pixels"
        assert max(abs(a - b) for a, b in zip(box, drawn, strict=True)) <= tolerance, (box, drawn)


@st.composite
def scenes(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    width, height = draw(st.integers(60, 200)), draw(st.integers(60, 200))
    boxes = []
    for _ in range(draw(st.integers(1, CHANNELS))):
        w, h = draw(st.integers(12, width // 2)), draw(st.integers(12, height // 2))
        x, y = draw(st.integers(0, width - w)), draw(st.integers(0, height - h))
        boxes.append((x, y, x + w, y + h))
    return width, height, boxes


@settings(max_examples=25, deadline=None)
@given(scene=scenes(), hflip=st.booleans(), vflip=st.booleans())
def test_flips_and_resize_move_boxes_with_pixels(scene, hflip: bool, vflip: bool) -> None:
    width, height, boxes = scene
    augment = AugmentOptions(hflip=float(hflip), vflip=float(vflip))
    image, target = _run(train_transforms(96, 160, augment), _scene(width, height, boxes), boxes)
    assert min(image.shape[-2:]) == 96 or max(image.shape[-2:]) == 160
    assert len(target["boxes"]) == len(boxes)  # flips and resizes never lose a box
    # Bilinear resizing blurs an edge over about one source pixel, scaled.
    scale = max(image.shape[-1] / width, image.shape[-2] / height)
    _assert_boxes_match_pixels(image, target, tolerance=1.0 + scale)


def test_a_flip_mirrors_the_box() -> None:
    boxes = [(10, 20, 40, 30)]
    image, target = _run(
        train_transforms(100, 200, AugmentOptions(hflip=1.0)), _scene(100, 100, boxes), boxes
    )
    assert target["boxes"].tolist() == [[60.0, 20.0, 90.0, 30.0]]
    _assert_boxes_match_pixels(image, target, tolerance=0.0)


@settings(max_examples=25, deadline=None)
@given(scene=scenes(), seed=st.integers(0, 2**16))
def test_scale_jitter_keeps_boxes_on_their_pixels(scene, seed: int) -> None:
    width, height, boxes = scene
    torch.manual_seed(seed)
    augment = AugmentOptions(hflip=0.5, vflip=0.5, scale_jitter=0.5)
    image, target = _run(train_transforms(96, 160, augment), _scene(width, height, boxes), boxes)
    scale = max(image.shape[-1] / width, image.shape[-2] / height)
    # Crops may cut objects (their boxes shrink with them) or drop them entirely.
    _assert_boxes_match_pixels(image, target, tolerance=1.0 + 2 * scale)


def test_photometric_jitter_leaves_geometry_alone() -> None:
    boxes = [(10, 20, 40, 50)]
    torch.manual_seed(0)
    image, target = _run(
        train_transforms(100, 200, AugmentOptions(hflip=0.0, photometric=1.0)),
        _scene(100, 100, boxes),
        boxes,
    )
    assert target["boxes"].tolist() == [[10.0, 20.0, 40.0, 50.0]]


def test_eval_resize_follows_the_rcnn_rule() -> None:
    boxes = [(30, 10, 90, 40)]
    image, target = _run(eval_transforms(100, 150), _scene(300, 100, boxes), boxes)
    assert image.shape[-2:] == (50, 150)  # the longer side hit max_size first
    assert target["boxes"].tolist() == [[15.0, 5.0, 45.0, 20.0]]
    _assert_boxes_match_pixels(image, target, tolerance=1.0)


def test_bad_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="hflip"):
        train_transforms(100, 200, AugmentOptions(hflip=1.5))
    with pytest.raises(ValueError, match="max_size"):
        eval_transforms(200, 100)
