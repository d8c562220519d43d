"""ml/detector.py: self-describing checkpoints and batched prediction (small CPU models)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.categories import ClassSet
from ml.data import TacoDataset
from ml.detector import CheckpointError, Detector, save_checkpoint
from ml.transforms import eval_transforms
from tests.conftest import PHOTOS_DIR
from trashmap.imaging import decode_oriented

ARCH = "fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.untrained(["bottle", "can", "bag"], ARCH, "cpu", min_size=256, max_size=384)


def _photos() -> list[Image.Image]:
    names = [
        "exifsamples__jpg_gps_DSCN0010.jpg",
        "exifsamples__jpg_orientation_landscape_6.jpg",
        "exifr__test_fixtures_IMG_20180725_163423-tiny.jpg",
    ]
    return [decode_oriented((PHOTOS_DIR / n).read_bytes(), (256, 384))[0] for n in names]


def test_checkpoint_round_trip_predicts_identically(detector: Detector, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = save_checkpoint(tmp_path / "d.pt", detector.model, detector.info)
    loaded = Detector.from_checkpoint(path, "cpu")
    assert loaded.info.class_names == ("bottle", "can", "bag")
    assert loaded.info.arch == ARCH and loaded.input_size == (256, 384)
    assert loaded.weights_sha256 and len(loaded.weights_sha256) == 64
    image = _photos()[0]
    a, b = detector.predict([image], 0.0)[0], loaded.predict([image], 0.0)[0]
    assert a, "an untrained model at threshold 0 still boxes something"
    assert [d.label for d in a] == [d.label for d in b]
    assert torch.allclose(torch.tensor([d.box for d in a]), torch.tensor([d.box for d in b]))


def test_batched_prediction_matches_one_at_a_time(detector: Detector) -> None:
    images = _photos()
    batched = detector.predict(images, 0.0)
    for image, from_batch in zip(images, batched, strict=True):
        single = detector.predict([image], 0.0)[0]
        assert len(single) == len(from_batch) > 0
        boxes_a = torch.tensor([d.box for d in single])
        boxes_b = torch.tensor([d.box for d in from_batch])
        # Padding to a common batch size changes float rounding, not the detections.
        assert torch.allclose(boxes_a, boxes_b, atol=1.0)
        w, h = image.size
        assert float(boxes_b[:, 2].max()) <= w and float(boxes_b[:, 3].max()) <= h


def test_untrained_detectors_with_the_same_seed_agree() -> None:
    a = Detector.untrained(["x"], ARCH, "cpu", min_size=128, max_size=160)
    b = Detector.untrained(["x"], ARCH, "cpu", min_size=128, max_size=160)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_not_a_checkpoint_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "weights.pt"
    torch.save({"model": {}}, bogus)
    with pytest.raises(CheckpointError, match="not a trashmap detector checkpoint"):
        Detector.from_checkpoint(bogus, "cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        Detector.from_checkpoint(tmp_path / "missing.pt", "cpu")


def test_the_worker_feeds_the_model_what_evaluation_feeds_it(
    detector: Detector, tmp_path: Path
) -> None:
    """Fine texture (1 px gravel) at full size: the model must see the evaluation's pixels."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((900, 1200, 3)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(pixels).save(tmp_path / "gravel.png")
    data = {
        "images": [{"id": 1, "file_name": "gravel.png", "width": 1200, "height": 900}],
        "annotations": [],
        "categories": [{"id": 1, "name": "bottle"}],
    }
    dataset = TacoDataset(
        data, tmp_path, ClassSet(name="b", classes=("bottle",)), eval_transforms(256, 384)
    )
    seen: list[torch.Tensor] = []
    hook = detector.model.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        detector.model([dataset[0][0]])  # the evaluation path: dataset, then the model
        detector.predict([dataset.load_image(0)], 0.5)  # the worker path: the photo itself
    finally:
        hook.remove()
    evaluation, worker = seen
    assert evaluation.shape == worker.shape
    mse = float(((evaluation - worker) ** 2).mean())
    psnr = 10 * math.log10(float(evaluation.max() - evaluation.min()) ** 2 / max(mse, 1e-12))
    assert psnr > 50, f"model inputs differ: PSNR {psnr:.1f} dB"
