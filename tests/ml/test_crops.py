"""Training on native-resolution crops: tiles hold their box, boxes are cut, slicing follows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from ml import recipe
from ml.slicing import checkpoint_slicing
from ml.train_options import TrainOptions
from ml.transforms import RandomBoxCrop, train_transforms

HEIGHT, WIDTH = 300, 400


def _coordinates_image() -> tv_tensors.Image:
    """Pixels that say where they are: x and y modulo 256, and 16 * (x // 256) + y // 256."""
    ys, xs = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    high = 16 * (xs // 256) + ys // 256
    return tv_tensors.Image(torch.stack([xs % 256, ys % 256, high]).to(torch.uint8))


def _origin(image: torch.Tensor) -> tuple[int, int]:
    """x, y in the photo of a crop's top-left pixel."""
    x, y, high = (int(v) for v in image[:, 0, 0])
    return x + 256 * (high // 16), y + 256 * (high % 16)


def _sample(boxes: list[list[float]]) -> tuple[tv_tensors.Image, dict[str, object]]:
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes), format="XYXY", canvas_size=(HEIGHT, WIDTH)
        ),
        "labels": torch.arange(1, len(boxes) + 1),
        "image_id": 7,
    }
    return _coordinates_image(), target


BOXES = [[10.0, 20.0, 40.0, 60.0], [150.0, 100.0, 230.0, 130.0], [300.0, 250.0, 390.0, 298.0]]


def test_a_crop_holds_the_box_it_was_cut_around_and_cuts_the_others() -> None:
    torch.manual_seed(0)
    crop = RandomBoxCrop(96, anywhere=0.0)
    image, target = _sample(BOXES)
    whole = {tuple(b) for b in BOXES}
    centred: set[tuple[float, ...]] = set()
    for _ in range(40):
        out, cut = crop(image, target)
        assert out.shape[-2:] == (96, 96)
        assert cut["image_id"] == 7
        left, top = _origin(out)  # where the window lies
        expected = (
            torch.tensor(BOXES) - torch.tensor([left, top, left, top], dtype=torch.float32)
        ).clamp(0, 96)
        keep = (expected[:, 2] - expected[:, 0] >= 1) & (expected[:, 3] - expected[:, 1] >= 1)
        assert cut["boxes"].canvas_size == (96, 96)
        torch.testing.assert_close(cut["boxes"].as_subclass(torch.Tensor), expected[keep])
        assert cut["labels"].tolist() == (torch.nonzero(keep).flatten() + 1).tolist()
        # At least one box lies whole inside: the one the window was placed around.
        shifted = {
            (x1 + left, y1 + top, x2 + left, y2 + top) for x1, y1, x2, y2 in cut["boxes"].tolist()
        }
        assert shifted & whole
        centred |= shifted & whole
    assert centred == whole  # each box in turn, not always the same corner


def test_a_box_larger_than_the_crop_fills_it_and_a_small_photo_keeps_its_size() -> None:
    torch.manual_seed(1)
    image, target = _sample([[50.0, 40.0, 350.0, 280.0]])
    out, cut = RandomBoxCrop(64, anywhere=0.0)(image, target)
    assert cut["boxes"].tolist() == [[0.0, 0.0, 64.0, 64.0]]
    out, cut = RandomBoxCrop(1000, anywhere=0.0)(image, target)
    assert out.shape[-2:] == (HEIGHT, WIDTH)
    assert cut["boxes"].tolist() == [[50.0, 40.0, 350.0, 280.0]]


def test_random_tiles_may_hold_nothing_and_training_gets_square_crops_resized() -> None:
    torch.manual_seed(2)
    image, target = _sample(BOXES[:1])
    emptied = sum(
        len(RandomBoxCrop(64, anywhere=1.0)(image, target)[1]["boxes"]) == 0 for _ in range(20)
    )
    assert emptied > 0
    transform = train_transforms(32, 64, crop=RandomBoxCrop(96, anywhere=0.0))
    out, cut = transform(image, target)
    assert out.shape[-2:] == (32, 32) and out.dtype == torch.float32
    assert len(cut["boxes"]) == 1  # the only box, never dropped
    with pytest.raises(ValueError, match="crop size"):
        RandomBoxCrop(0)


def test_training_crops_set_the_checkpoint_s_tiles(shapes: Path) -> None:
    options = TrainOptions(
        annotations=shapes / "annotations.json",
        images=shapes,
        out=shapes / "unused",
        classes="litter",
        min_size=(48,),
        max_size=96,
        crop_size=64,
        val_fraction=0.0,
    )
    train, _, _ = recipe.datasets(options)
    image, target = train[0]
    assert image.shape[-2:] == (48, 48)  # a 64 px tile, resized as usual
    payload = {"slicing": recipe.slicing(options)}
    assert checkpoint_slicing(payload).size == 64
    assert checkpoint_slicing(payload).overlap == options.slice_overlap
    explicit = dataclasses.replace(options, slice_size=128)
    assert checkpoint_slicing({"slicing": recipe.slicing(explicit)}).size == 128
    assert not checkpoint_slicing(
        {"slicing": recipe.slicing(dataclasses.replace(options, crop_size=0))}
    ).enabled
    # --slice 0 switches it off even for a model trained on crops.
    off = dataclasses.replace(options, slice_size=0)
    assert not checkpoint_slicing({"slicing": recipe.slicing(off)}).enabled
