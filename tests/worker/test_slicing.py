"""Sliced inference in the worker: the checkpoint's slice settings, the operator's overrides,
native-resolution decoding, and batches that find what each photo finds alone."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from torchvision.transforms.v2.functional import pil_to_tensor

from ml.detector import Detector, save_checkpoint
from ml.inference import BatchPredictor, group_by_shape
from ml.slicing import SliceOptions, predict_sliced, regions
from tests.conftest import PHOTOS_DIR
from tests.worker.conftest import small_detector
from trashmap.imaging import decode_oriented
from trashmap.models import ModelVersion
from trashmap.settings import Settings, SettingsError
from worker.batching import Batcher
from worker.loader import ModelLoader

# Two photos of one size (their tiles share model calls) and one smaller than a tile.
NAMES = [
    "exifsamples__jpg_gps_DSCN0010.jpg",
    "exifsamples__jpg_gps_DSCN0012.jpg",
    "exiftool__t_images_GPS.jpg",
]
TILES = SliceOptions(size=480, overlap=0.25)
# 1600x900: draft decoding would quarter it at the input size below.
LARGE = "exifsamples__jpg_tests_45-gps_ifd.jpg"
LARGE_TILES = {"size": 800, "overlap": 0.25}
# The CPU configuration at a small input: these tests run the model on every tile.
ARCH, SIZES = "fasterrcnn_mobilenet_v3_large_320_fpn", (160, 256)


def tiny_detector(seed: int) -> Detector:
    return small_detector(seed, ARCH, SIZES)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return tiny_detector(seed=3)


def test_a_sliced_batch_finds_what_each_photo_finds_alone(detector: Detector) -> None:
    images = [pil_to_tensor(decode_oriented((PHOTOS_DIR / n).read_bytes())[0]) for n in NAMES]
    predictor = BatchPredictor(detector, max_batch=8, precision="fp32", slicing=TILES)
    batched = predictor.predict(images, 0.05, None)
    # One photo at a time, through ml.slicing's own model calls (what `ml predict` runs).
    alone = [predict_sliced(detector, [image], TILES, 0.05, None)[0] for image in images]
    views = [
        (y2 - y1, x2 - x1)
        for image in images
        for x1, y1, x2, y2 in regions(image.shape[-2], image.shape[-1], TILES)
    ]
    assert len(views) == 7, "two photos cut into two tiles each, plus three whole photos"
    groups = group_by_shape(views, *SIZES, 8)
    assert len(groups) == 3, "tiles of different photos should share model calls"
    whole = BatchPredictor(detector, max_batch=8, precision="fp32").predict(images, 0.05, None)
    assert sum(map(len, batched[:2])) > sum(map(len, whole[:2])), "tiles added nothing"
    assert [d.box for d in batched[2]] == [d.box for d in whole[2]], "a photo under a tile"
    assert sum(len(found) for found in alone) > 0, "no detections: the comparison is empty"
    for image, one, many in zip(images, alone, batched, strict=True):
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert a.label == b.label
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert a.box == pytest.approx(b.box, abs=0.05)
            assert 0 <= b.box[0] <= b.box[2] <= image.shape[-1]
            assert 0 <= b.box[1] <= b.box[3] <= image.shape[-2]


@pytest.fixture(scope="module")
def sliced_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random small checkpoint whose training stored slice settings (as `ml train` does)."""
    model = tiny_detector(seed=6)
    info = replace(model.info, name="sliced")
    path = tmp_path_factory.mktemp("sliced") / "sliced.pt"
    return save_checkpoint(path, model.model, info, slicing=LARGE_TILES)


def _loader(settings: Settings, sessions: sessionmaker[Session], weights: Path) -> ModelLoader:
    # Pinned: the checkpoint is registered but not activated, so other tests are unaffected.
    loader = ModelLoader(replace(settings, weights=weights), sessions, untrained=False, pinned=True)
    loader.start()
    return loader


def test_the_worker_slices_as_its_checkpoint_says_on_native_pixels(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    sliced_checkpoint: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = (PHOTOS_DIR / LARGE).read_bytes()
    with caplog.at_level(logging.INFO, logger="worker.loader"):
        loader = _loader(pg_settings, pg_sessions, sliced_checkpoint)
    assert loader.current is not None
    predictor = loader.current.predictor
    assert predictor.slicing == SliceOptions(**LARGE_TILES)  # type: ignore[attr-defined]
    assert "slicing 800 px tiles, overlap 0.25" in caplog.text
    image, factor = loader.decode(data)
    assert (image.size, factor) == ((1600, 900), 1.0), "tiles must be cut from native pixels"
    with pg_sessions() as session:
        row = session.scalar(sa.select(ModelVersion).where(ModelVersion.name == "sliced"))
        assert row is not None and row.metrics["slicing"] == LARGE_TILES
    batcher = Batcher(loader.resolve, 8, 0.0, 20)
    try:
        result = batcher.submit(1, image, loader.current.version_id).result(timeout=120)
    finally:
        batcher.close()
    # What the batcher ran is ml.slicing's sliced prediction (threshold 0 from pg_settings).
    (expected,) = predict_sliced(
        predictor.detector,  # type: ignore[attr-defined]
        [pil_to_tensor(image)],
        SliceOptions(**LARGE_TILES),
        0.0,
        20,
    )
    assert len(result.found) == len(expected) > 0
    for got, want in zip(result.found, expected, strict=True):
        assert got.box == pytest.approx(want.box, abs=0.05)


def test_the_operator_overrides_the_checkpoints_slicing(
    pg_settings: Settings, pg_sessions: sessionmaker[Session], sliced_checkpoint: Path
) -> None:
    data = (PHOTOS_DIR / LARGE).read_bytes()
    off = _loader(replace(pg_settings, slice_size=0), pg_sessions, sliced_checkpoint)
    assert not off.current.predictor.slicing.enabled  # type: ignore[union-attr]
    image, factor = off.decode(data)
    assert factor == 4.0, "without slicing, draft decoding is back"
    wider = _loader(replace(pg_settings, slice_overlap=0.5), pg_sessions, sliced_checkpoint)
    assert wider.current.predictor.slicing == SliceOptions(800, 0.5)  # type: ignore[union-attr]


def test_a_reprocessing_run_decodes_for_the_version_it_runs(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    sliced_checkpoint: Path,
    tmp_path: Path,
) -> None:
    data = (PHOTOS_DIR / LARGE).read_bytes()
    sliced = _loader(pg_settings, pg_sessions, sliced_checkpoint)
    assert sliced.current is not None
    model = tiny_detector(seed=7)
    plain_path = save_checkpoint(
        tmp_path / "plain.pt", model.model, replace(model.info, name="plain")
    )
    plain = _loader(pg_settings, pg_sessions, plain_path)
    assert plain.decode(data)[1] == 4.0, "its own model does not slice: draft decoding"
    # Reprocessing with the sliced version: tiles need the native pixels, whatever runs now.
    version = sliced.current.version_id
    assert plain.decode(data, version)[1] == 1.0  # not loaded yet: native, as for any model
    plain.resolve(version)  # the batch loads it
    image, factor = plain.decode(data, version)
    assert (image.size, factor) == ((1600, 900), 1.0)
    plain_version = plain.current.version_id  # type: ignore[union-attr]
    assert sliced.decode(data, plain_version)[1] == 1.0  # not loaded in `sliced` yet
    sliced.resolve(plain_version)
    assert sliced.decode(data, plain_version)[1] == 4.0, "a loaded plain version: draft"


def test_slice_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings.from_env().slice_size, Settings.from_env().slice_overlap) == (None, None)
    monkeypatch.setenv("TRASHMAP_SLICE", "640")
    monkeypatch.setenv("TRASHMAP_SLICE_OVERLAP", "0.3")
    assert (Settings.from_env().slice_size, Settings.from_env().slice_overlap) == (640, 0.3)
    monkeypatch.setenv("TRASHMAP_SLICE_OVERLAP", "0.95")  # thousands of tiles a photo
    with pytest.raises(SettingsError, match="TRASHMAP_SLICE_OVERLAP"):
        Settings.from_env()
    monkeypatch.setenv("TRASHMAP_SLICE", "-1")
    with pytest.raises(SettingsError, match="TRASHMAP_SLICE="):
        Settings.from_env()
