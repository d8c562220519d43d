"""The detection pipeline in-process with a real small model on PostgreSQL: one odd photo
fails alone, every photo has a deadline whatever runs the task, the checkpoint's own score
threshold is used."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from ml.detector import Detector, save_checkpoint
from ml.inference import BatchPredictor
from tests.conftest import PHOTOS_DIR
from tests.worker.conftest import photo_row, small_detector, store_image, store_photo
from trashmap.db import session_scope
from trashmap.imaging import decode_oriented
from trashmap.models import Detection, ModelVersion
from trashmap.settings import Settings
from trashmap.versions import activate
from worker import pipeline
from worker.batching import Batcher, Model
from worker.leases import Membership
from worker.loader import ModelLoader
from worker.versions import register_checkpoint

NORMAL = [
    "exifsamples__jpg_gps_DSCN0010.jpg",
    "exifsamples__jpg_gps_DSCN0012.jpg",
    "exifsamples__jpg_gps_DSCN0021.jpg",
    "exifsamples__jpg_orientation_landscape_6.jpg",
    "exiftool__t_images_GPS.jpg",
]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return small_detector()


def _model_version(sessions: sessionmaker[Session], detector: Detector) -> int:
    from worker.loader import register_untrained

    return register_untrained(sessions, detector)


def strip_jpeg(width: int = 1, height: int = 20_000) -> bytes:
    """A valid JPEG so thin that resizing it to the model's input leaves 0 pixels across."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 60)).save(buf, "JPEG")
    return buf.getvalue()


def _decode(detector: Detector):  # type: ignore[no-untyped-def]
    return lambda data: decode_oriented(data, target=detector.input_size)


@pytest.fixture
def batcher(detector: Detector, pg_sessions: sessionmaker[Session]) -> Iterator[Batcher]:
    model = Model(
        _model_version(pg_sessions, detector),
        "small",
        BatchPredictor(detector, max_batch=8, precision="fp32"),
        0.0,
    )
    # A long wait, so the six photos below surely share one batch.
    batcher = Batcher(lambda _: model, max_size=8, max_wait_s=3.0, max_detections=20)
    yield batcher
    batcher.close()


def _detect_all(
    sessions: sessionmaker[Session],
    detector: Detector,
    batcher: Batcher,
    membership: Membership,
    ids: list[int],
    time_limit_s: float = 600,
) -> dict[int, pipeline.Outcome]:
    """Run the pipeline for every photo at once, one thread each, as the threads pool does."""
    outcomes: dict[int, pipeline.Outcome] = {}

    def run(photo_id: int) -> None:
        outcomes[photo_id] = pipeline.detect_photo(
            sessions,
            _decode(detector),
            batcher.infer,
            photo_id,
            membership=membership,
            time_limit_s=time_limit_s,
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return outcomes


def test_an_odd_photo_fails_alone_not_with_its_batch(
    pg_sessions: sessionmaker[Session],
    detector: Detector,
    batcher: Batcher,
    membership: Membership,
) -> None:
    normal = [store_photo(pg_sessions, name) for name in NORMAL]
    odd = store_image(pg_sessions, strip_jpeg(), 1, 20_000)
    outcomes = _detect_all(pg_sessions, detector, batcher, membership, [*normal, odd])
    assert {i: o.status for i, o in outcomes.items()} == {
        **{i: "done" for i in normal},
        odd: "failed",
    }
    error = photo_row(pg_sessions, odd).error or ""
    assert "W: 0" in error, error  # its own reason: the resize to 0 pixels across
    assert all(photo_row(pg_sessions, i).error is None for i in normal)
    assert max(o.detections for o in outcomes.values()) > 0, "no detections: proves nothing"


def test_a_photo_whose_result_does_not_come_in_time_fails_as_timed_out(
    pg_sessions: sessionmaker[Session],
    detector: Detector,
    batcher: Batcher,
    membership: Membership,
) -> None:
    """The threads pool ignores Celery's time limits: the pipeline's own deadline holds.

    The batcher waits up to 3 s for its batch to fill; a 1 s limit runs out first.
    """
    photo_id = store_photo(pg_sessions, NORMAL[0])
    outcomes = _detect_all(pg_sessions, detector, batcher, membership, [photo_id], 1.0)
    assert outcomes[photo_id].status == "failed"
    photo = photo_row(pg_sessions, photo_id)
    assert photo.status == "failed"
    assert (photo.error or "").startswith("timed out"), photo.error
    # The photo that came back from a slow batch is not held: the next run may start it.
    assert not membership.runs(photo_id)


def test_the_worker_uses_the_checkpoints_own_score_threshold(
    pg_settings: Settings,
    pg_sessions: sessionmaker[Session],
    detector: Detector,
    tmp_path: Path,
) -> None:
    """ml/README.md: the checkpoint carries its threshold; TRASHMAP_SCORE_THRESHOLD unset
    must not replace it with 0.5."""
    info = replace(detector.info, name="thresholded", version="t1", score_threshold=0.02)
    path = save_checkpoint(tmp_path / "t.pt", detector.model, info)
    with session_scope(pg_sessions) as session:
        row, _ = register_checkpoint(session, path)
        activate(session, row)
        version = row.id
    try:
        unset = replace(pg_settings, score_threshold=None)
        found = _run_one(unset, pg_sessions)
        assert found and min(f.score for f in found) >= 0.02
        assert min(f.score for f in found) < 0.5, "only boxes over 0.5: the setting's default won"
        # Set explicitly, the setting wins.
        assert all(
            f.score >= 0.5 for f in _run_one(replace(unset, score_threshold=0.5), pg_sessions)
        )
    finally:
        with session_scope(pg_sessions) as session:
            session.execute(sa.update(ModelVersion).values(active=False))
            session.execute(sa.delete(Detection).where(Detection.model_version_id == version))


def _run_one(settings: Settings, sessions: sessionmaker[Session]) -> list:  # type: ignore[type-arg]
    loader = ModelLoader(settings, sessions, untrained=False, pinned=False)
    model = loader.start()
    batcher = Batcher(loader.resolve, 8, 0.0, 100)
    try:
        data = (PHOTOS_DIR / NORMAL[1]).read_bytes()
        image = loader.decode(data)[0]
        return batcher.submit(1, image, model.version_id).result(timeout=120).found
    finally:
        batcher.close()
