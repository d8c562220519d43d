"""Shared fixtures: real PostgreSQL, Redis and Celery worker processes; nothing mocked."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from trashmap import migrate, storage
from trashmap.db import make_engine, make_session_factory
from trashmap.models import ModelVersion
from trashmap.settings import Settings
from web import create_app

ROOT = Path(__file__).resolve().parent.parent
# Test data ships in the repository (see tests/data/*/ATTRIBUTION.md): a clone is enough.
TEST_DATA = ROOT / "tests" / "data"
PHOTOS_DIR = TEST_DATA / "photos"
PG_URL = os.environ.get(
    "TRASHMAP_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/trashmap_test"
)
REDIS_URL = os.environ.get("TRASHMAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

# A small random detector keeps end-to-end runs fast on a CPU; threshold 0 makes it box.
SMALL_DETECTOR_ENV = {
    "TRASHMAP_UNTRAINED_ARCH": "fasterrcnn_mobilenet_v3_large_fpn",
    "TRASHMAP_MIN_SIZE": "320",
    "TRASHMAP_MAX_SIZE": "512",
    "TRASHMAP_SCORE_THRESHOLD": "0",
    "TRASHMAP_MAX_DETECTIONS": "20",
}


@dataclass(frozen=True)
class ManifestRow:
    file: str
    lat: float | None
    lon: float | None
    alt: float | None
    orientation: str
    notes: str

    @property
    def path(self) -> Path:
        return PHOTOS_DIR / self.file

    @property
    def decodable(self) -> bool:
        return "cannot decode" not in self.notes

    @property
    def accepted(self) -> bool:
        """The upload stores it: decodable, and not refused for its size (trashmap.imaging)."""
        return self.decodable and "refused at upload" not in self.notes


def _num(text: str) -> float | None:
    return float(text) if text.strip() else None


def manifest() -> list[ManifestRow]:
    """The rows of tests/data/photos/MANIFEST.tsv."""
    with open(PHOTOS_DIR / "MANIFEST.tsv", newline="") as fh:
        return [
            ManifestRow(
                r["file"],
                _num(r["lat"]),
                _num(r["lon"]),
                _num(r["altitude_m"]),
                r["orientation"],
                r["notes"],
            )
            for r in csv.DictReader(fh, delimiter="\t")
        ]


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child `trashmap` process use these settings."""
    env = dict(os.environ)
    env.update(
        TRASHMAP_DATABASE_URL=settings.database_url,
        TRASHMAP_BROKER_URL=settings.broker_url,
        TRASHMAP_QUEUE=settings.queue_name,
        TRASHMAP_DATA_DIR=str(settings.data_dir),
        TRASHMAP_LOG_LEVEL="INFO",
    )
    env.update(SMALL_DETECTOR_ENV)
    return env


def _recreate_database(url: str) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    except sa.exc.OperationalError as exc:
        pytest.exit(f"PostgreSQL is not reachable at {url} ({exc.orig}); start it first", 2)
    finally:
        admin.dispose()


@contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database beside the test one: its URL, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = make_url(PG_URL)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for a fresh, migrated PostgreSQL database and a private Redis queue."""
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis is not reachable at {REDIS_URL} ({exc}); start it first", 2)
    _recreate_database(PG_URL)
    settings = Settings.from_env(
        database_url=PG_URL,
        broker_url=REDIS_URL,
        queue_name=f"trashmap.test.{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path_factory.mktemp("pgdata"),
        score_threshold=0.0,
        # Many tests share one client IP and one Redis; tests/web/test_ratelimit.py turns it on.
        rate_limit_enabled=False,
    )
    migrate.upgrade(settings)
    # Photo bytes go to <data_dir>/storage, where the workers started with settings_env
    # look too; code that is given no storage (test helpers) uses this one.
    storage.configure(storage.open_storage(settings))
    return settings


@pytest.fixture(scope="session")
def pg_engine(pg_settings: Settings) -> Iterator[sa.Engine]:
    engine = make_engine(pg_settings)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_clean(pg_settings: Settings, pg_engine: sa.Engine) -> sa.Engine:
    """Empty photo tables and storage before the test (model versions stay: workers cache
    their id)."""
    with pg_engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE photos, detections RESTART IDENTITY CASCADE"))
    shutil.rmtree(pg_settings.data_dir / "storage", ignore_errors=True)
    return pg_engine


@pytest.fixture
def pg_sessions(pg_clean: sa.Engine):  # type: ignore[no-untyped-def]
    return make_session_factory(pg_clean)


@pytest.fixture
def app(pg_settings: Settings, pg_clean: sa.Engine):  # type: ignore[no-untyped-def]
    app = create_app(pg_settings)
    app.config["TESTING"] = True
    yield app
    app.extensions["trashmap"].engine.dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


def post_photo(client, path: Path, **fields: str):  # type: ignore[no-untyped-def]
    """POST a file from disk to the upload endpoint through the Flask test client."""
    with open(path, "rb") as fh:
        return client.post(
            "/api/v1/photos",
            data={"file": (fh, path.name), **fields},
            content_type="multipart/form-data",
        )


def stop_process(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerProcess:
    """A real `trashmap worker` process, started and stopped by a test."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        env = settings_env(settings)
        env.update(extra_env or {})
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trashmap", "worker", "--untrained", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_ready(self, sessions, timeout_s: float = 180) -> None:  # type: ignore[no-untyped-def]
        """Ready once its model is loaded: it registers its model version row then."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if "ready: model" in self.log():
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def pg_worker(
    pg_settings: Settings, pg_engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One detection worker on PostgreSQL + Redis for a whole test module."""
    redis.Redis.from_url(REDIS_URL).delete(pg_settings.queue_name)
    worker = WorkerProcess(pg_settings, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        worker.wait_ready(make_session_factory(pg_engine))
        yield worker
    finally:
        worker.stop()


def wait_for_status(sessions, photo_ids: list[int], timeout_s: float = 300) -> dict[int, str]:  # type: ignore[no-untyped-def]
    """Poll the database until every photo is done or failed; returns id -> status."""
    from trashmap.models import Photo

    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            rows = session.execute(
                sa.select(Photo.id, Photo.status).where(Photo.id.in_(photo_ids))
            ).all()
        statuses = {row.id: row.status for row in rows}
        if all(s in ("done", "failed") for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def model_version_ids(sessions) -> list[int]:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return list(session.scalars(sa.select(ModelVersion.id)))


def embedded_settings(tmp_path: Path) -> Settings:
    """The no-server default, rooted in a temporary folder."""
    return replace(
        Settings.from_env(),
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'trashmap.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        queue_name="trashmap.detect",
        score_threshold=0.0,
    )
