"""Fixtures for the worker tests: photos stored without a message, small checkpoints."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import PHOTOS_DIR, SMALL_DETECTOR_ENV
from trashmap.db import session_scope
from trashmap.ingest import ClientFields, ingest_photo
from trashmap.models import Detection, ModelVersion, Photo
from trashmap.queue import DetectionQueue
from trashmap.settings import Settings
from trashmap.storage import default_storage, put_photo_bytes
from worker.leases import Membership

SMALL_ARCH = SMALL_DETECTOR_ENV["TRASHMAP_UNTRAINED_ARCH"]
SMALL_SIZES = (
    int(SMALL_DETECTOR_ENV["TRASHMAP_MIN_SIZE"]),
    int(SMALL_DETECTOR_ENV["TRASHMAP_MAX_SIZE"]),
)


def store_photo(sessions: sessionmaker[Session], name: str) -> int:
    """Store a photo as the upload does (status queued) but send no message."""
    with sessions() as session:
        photo, _ = ingest_photo(
            session, (PHOTOS_DIR / name).read_bytes(), name, ClientFields(), 120_000_000
        )
        return photo.id


def detections_by_version(sessions: sessionmaker[Session], photo_id: int) -> dict[int, int]:
    with sessions() as session:
        rows = session.execute(
            sa.select(Detection.model_version_id, sa.func.count())
            .where(Detection.photo_id == photo_id)
            .group_by(Detection.model_version_id)
        )
        return {version: count for version, count in rows}


def photo_row(sessions: sessionmaker[Session], photo_id: int) -> Photo:
    with sessions() as session:
        photo = session.get(Photo, photo_id)
        assert photo is not None
        return photo


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def small_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two random mobilenet checkpoints (seeds 1 and 2): two distinct model versions."""
    from ml.detector import Detector, save_checkpoint

    folder = tmp_path_factory.mktemp("checkpoints")
    paths = []
    for seed in (1, 2):
        detector = Detector.untrained(
            [f"class_{i}" for i in range(1, 16)],
            SMALL_ARCH,
            "cpu",
            min_size=SMALL_SIZES[0],
            max_size=SMALL_SIZES[1],
            seed=seed,
        )
        paths.append(save_checkpoint(folder / f"seed{seed}.pt", detector.model, detector.info))
    return paths


@pytest.fixture
def producer(pg_settings: Settings) -> Iterator[DetectionQueue]:
    sender = DetectionQueue(pg_settings)
    yield sender
    sender.close()


def store_image(sessions: sessionmaker[Session], data: bytes, width: int, height: int) -> int:
    """Store image bytes and their photo row directly (as an older upload path let them in)."""
    sha256 = put_photo_bytes(default_storage(), data)
    with session_scope(sessions) as session:
        photo = Photo(
            sha256=sha256,
            content_type="image/jpeg",
            byte_size=len(data),
            width=width,
            height=height,
        )
        session.add(photo)
        session.flush()
        return photo.id


def small_detector(  # type: ignore[no-untyped-def]
    seed: int = 3, arch: str = SMALL_ARCH, sizes: tuple[int, int] = SMALL_SIZES
):
    """A seeded random mobilenet detector, at the test workers' input size unless told."""
    from ml.detector import Detector

    return Detector.untrained(
        [f"class_{i}" for i in range(1, 16)],
        arch,
        "cpu",
        min_size=sizes[0],
        max_size=sizes[1],
        seed=seed,
    )


@pytest.fixture
def membership(pg_sessions: sessionmaker[Session]) -> Iterator[Membership]:
    """This test's worker lease: heartbeats every 0.2 s, dead after 2 s of silence."""
    member = Membership(pg_sessions, "test", heartbeat_s=0.2, lease_timeout_s=2)
    yield member
    member.close()


def deactivate_all(engine: sa.Engine) -> None:
    """No version active: other modules' `--untrained` workers run their random model."""
    with session_scope(sessionmaker(engine)) as session:
        session.execute(sa.update(ModelVersion).values(active=False))
