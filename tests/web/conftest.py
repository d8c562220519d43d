"""Fixtures for the map API: seeded photos and detections, API keys, a live server."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import BaseWSGIServer, make_server

from trashmap.apikeys import create_key
from trashmap.db import session_scope
from trashmap.models import Detection, ModelVersion, Photo

# Cities the seeded photos cluster around: (name, lat, lon).
CITIES = [
    ("paris", 48.8566, 2.3522),
    ("sydney", -33.8688, 151.2093),
    ("new_york", 40.7128, -74.0060),
]
LABELS = ["Clear plastic bottle", "Drink can", "Cigarette", "Plastic film", "Glass bottle"]
STATUSES = ["done", "done", "done", "queued", "failed"]


@dataclass(frozen=True)
class SeedPhoto:
    id: int
    lat: float | None
    lon: float | None
    taken_at: datetime | None
    status: str


@dataclass(frozen=True)
class SeedDetection:
    id: int
    photo: SeedPhoto
    label: str
    score: float
    model: str  # "name:version"


@dataclass
class Seed:
    photos: list[SeedPhoto]
    detections: list[SeedDetection]


def _model(session: Session, name: str, version: str) -> ModelVersion:
    row = session.scalar(
        sa.select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    )
    if row is None:
        row = ModelVersion(
            name=name, version=version, arch="fasterrcnn_mobilenet_v3_large_fpn", class_names=LABELS
        )
        session.add(row)
        session.flush()
    return row


def seed_map(sessions: sessionmaker[Session], photos: int = 60, seed: int = 7) -> Seed:
    """Photos around three cities over 2024 (some without detections, one without a
    position or a date), with detections from two model versions; ids returned for checks."""
    rng = random.Random(seed)
    out = Seed([], [])
    with session_scope(sessions) as session:
        models = [_model(session, "seed", "1"), _model(session, "seed", "2")]
        for i in range(photos):
            _, lat0, lon0 = CITIES[i % len(CITIES)]
            located = i != 5
            lat = round(lat0 + rng.gauss(0, 0.05), 6) if located else None
            lon = round(lon0 + rng.gauss(0, 0.05), 6) if located else None
            taken_at = (
                None
                if i == 9
                else datetime(2024, 1, 1, 8)
                + timedelta(days=rng.randrange(0, 120), hours=rng.randrange(0, 12))
            )
            status = STATUSES[i % len(STATUSES)]
            photo = Photo(
                sha256=hashlib.sha256(f"seed-{seed}-{i}".encode()).hexdigest(),
                content_type="image/jpeg",
                byte_size=1000,
                width=640,
                height=480,
                lat=lat,
                lon=lon,
                location_source="exif" if located else None,
                taken_at=taken_at,
                status=status,
                warnings=[],
            )
            session.add(photo)
            session.flush()
            seeded = SeedPhoto(photo.id, lat, lon, taken_at, status)
            out.photos.append(seeded)
            if status != "done" or i % 7 == 0:
                continue  # photos without detections still appear in /photos
            model = models[i % 2]
            photo.model_version_id = model.id
            for _ in range(rng.randrange(1, 8)):
                x1, y1 = rng.uniform(0, 500), rng.uniform(0, 350)
                det = Detection(
                    photo_id=photo.id,
                    model_version_id=model.id,
                    label=rng.choice(LABELS),
                    score=round(rng.uniform(0, 1), 4),
                    x1=x1,
                    y1=y1,
                    x2=x1 + rng.uniform(5, 100),
                    y2=y1 + rng.uniform(5, 100),
                    lat=lat,
                    lon=lon,
                )
                session.add(det)
                session.flush()
                out.detections.append(
                    SeedDetection(det.id, seeded, det.label, det.score, model.label)
                )
    return out


@pytest.fixture
def seeded(pg_sessions) -> Seed:  # type: ignore[no-untyped-def]
    return seed_map(pg_sessions)


def make_token(sessions: sessionmaker[Session], *scopes: str, name: str = "test") -> str:
    with session_scope(sessions) as session:
        _, token = create_key(session, name, scopes)
    return token


@pytest.fixture
def staff_token(pg_sessions) -> str:  # type: ignore[no-untyped-def]
    return make_token(pg_sessions, "read:stats", "export", "write", name="staff")


class LiveServer:
    """The Flask app served by werkzeug in a thread, on a free port."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with LiveServer(app) as server:
        yield server
