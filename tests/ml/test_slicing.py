"""Sliced inference: the tile grid covers the photo, merging drops duplicates across tiles."""

from __future__ import annotations

import pytest
import torch

from ml.detector import Detector
from ml.slicing import (
    CHECKPOINT_KEY,
    SliceOptions,
    checkpoint_slicing,
    merge,
    predict_sliced,
    regions,
    tiles,
)


@pytest.mark.parametrize(("height", "width"), [(3000, 4000), (1000, 700), (300, 200)])
def test_tiles_cover_the_photo_with_the_overlap_asked(height: int, width: int) -> None:
    grid = tiles(height, width, 512, 0.25)
    covered = torch.zeros((height, width), dtype=torch.bool)
    for x1, y1, x2, y2 in grid:
        covered[y1:y2, x1:x2] = True
        assert (x2 - x1, y2 - y1) == (min(512, width), min(512, height))  # one shape: one batch
    assert covered.all()
    xs = sorted({x1 for x1, _, _, _ in grid})
    assert all(b - a <= 512 * 0.75 for a, b in zip(xs, xs[1:], strict=False))


def test_merge_keeps_one_of_each_object_per_class() -> None:
    boxes = torch.tensor([[10, 10, 30, 30], [11, 10, 31, 30], [10, 10, 30, 30], [80, 80, 90, 90]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 2, 1])
    kept_boxes, kept_scores, kept_labels = merge(boxes.float(), scores, labels, None)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert kept_labels.tolist() == [1, 2, 1]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.untrained(
        ["x"], "fasterrcnn_mobilenet_v3_large_fpn", "cpu", min_size=128, max_size=192
    )


def test_a_photo_no_larger_than_a_tile_runs_once() -> None:
    assert regions(300, 200, SliceOptions(size=512)) == [(0, 0, 200, 300)]
    assert regions(300, 420, SliceOptions(size=0)) == [(0, 0, 420, 300)]
    sliced = regions(300, 420, SliceOptions(size=160, overlap=0.2))
    assert sliced[0] == (0, 0, 420, 300) and len(sliced) == 1 + len(tiles(300, 420, 160, 0.2))


def test_photos_sliced_together_find_what_each_finds_alone(detector: Detector) -> None:
    # Landscape and portrait: run as one batch, each would be padded to the other's shape.
    torch.manual_seed(1)
    images = [(torch.rand(3, h, w) * 255).to(torch.uint8) for h, w in ((300, 420), (380, 240))]
    options = SliceOptions(size=160, overlap=0.2)
    together = predict_sliced(detector, images, options, 0.0, 50)
    for image, found in zip(images, together, strict=True):
        (alone,) = predict_sliced(detector, [image], options, 0.0, 50)
        assert len(found) == len(alone) > 0
        for a, b in zip(found, alone, strict=True):
            assert a.box == pytest.approx(b.box, abs=0.05)


def test_sliced_prediction_stays_in_the_photo_and_off_is_the_whole_photo(
    detector: Detector,
) -> None:
    torch.manual_seed(0)
    image = (torch.rand(3, 300, 420) * 255).to(torch.uint8)
    whole = predict_sliced(detector, [image], SliceOptions(size=0), 0.0, 50)[0]
    assert [d.box for d in whole] == [d.box for d in detector.predict([image], 0.0, 50)[0]]
    sliced = predict_sliced(detector, [image], SliceOptions(size=160, overlap=0.2), 0.0, 50)[0]
    assert 0 < len(sliced) <= 50
    assert all(
        0 <= d.box[0] <= d.box[2] <= 420 and 0 <= d.box[1] <= d.box[3] <= 300 for d in sliced
    )
    assert [d.score for d in sliced] == sorted((d.score for d in sliced), reverse=True)


def test_slice_settings_travel_in_the_checkpoint_and_the_operator_overrides_them() -> None:
    payload = {CHECKPOINT_KEY: {"size": 512, "overlap": 0.3}}
    assert checkpoint_slicing(payload) == SliceOptions(size=512, overlap=0.3)
    assert not checkpoint_slicing(payload, size=0).enabled
    assert checkpoint_slicing({}, size=640) == SliceOptions(size=640, overlap=0.2)
    assert not checkpoint_slicing({}).enabled
    stored = SliceOptions(size=768, overlap=0.25)
    assert checkpoint_slicing({CHECKPOINT_KEY: stored.to_dict()}) == stored
    assert (stored.describe(), SliceOptions().describe()) == ("768 px tiles, overlap 0.25", "off")
    with pytest.raises(ValueError, match="overlap"):
        SliceOptions(size=256, overlap=0.95)
