"""Soak runs shared by the bounded tests (tests/reliability/test_soak.py) and their longer
forms (bench/soak_workers.py): uploads go on while workers are killed or a server is
stopped, then every acknowledged photo is checked in the database.

Counts, as RELIABILITY.md reports them: acknowledged (201 answers), stored (their rows),
processed (ended `done`), lost (acknowledged but not stored, or not `done` when the run
settled), duplicated (runs stored more than once for one photo, from the workers' logs,
plus rows of one photo and version beyond one run's), and the time from the last upload
until the last photo settled.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import requests
import sqlalchemy as sa
from PIL import Image

from trashmap.db import make_engine
from trashmap.models import Detection, Photo
from trashmap.settings import Settings

if TYPE_CHECKING:
    from tests.reliability.servers import PrivatePostgres, PrivateRedis

ROOT = Path(__file__).resolve().parents[2]
# Photo seeds per scenario, so scenarios run on one database upload distinct photos.
KILL_SEEDS, REDIS_SEEDS = 0, 500
RUN_LINE = re.compile(r"photo (\d+): \d+ detections \(version (\d+)")


def noise_jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small JPEG, distinct per seed."""
    rng = random.Random(seed)
    image = Image.frombytes(
        "RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3))
    )
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return buf.getvalue()


class SoakWorker:
    """`trashmap worker --untrained` in its own process group, killed and restarted at will;
    its log accumulates over restarts."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trashmap", "worker", "--untrained", *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as `kill -9 -PGID` needs
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and any children)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_ready(self, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log().count("ready: model") >= self.starts:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log()[-3000:]}")
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout_s} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass


@dataclass
class Uploads:
    """What clients sent and what they were answered."""

    acknowledged: dict[int, str] = field(default_factory=dict)  # id -> sha256 of each 201
    statuses: Counter[int] = field(default_factory=Counter)  # HTTP status -> count
    errors: list[str] = field(default_factory=list)  # bodies of unexpected answers
    last_201: float = 0.0  # time.monotonic() of the last 201
    lock: threading.Lock = field(default_factory=threading.Lock)


def upload_until(
    url: str, stop: threading.Event, uploads: Uploads, offset: int, pause_s: float
) -> None:
    """One client: POST distinct photos until `stop`, recording every answer."""
    seed = offset
    while not stop.is_set():
        try:
            response = requests.post(
                f"{url}/api/v1/photos", timeout=30, files={"file": ("p.jpg", noise_jpeg(seed))}
            )
            status = response.status_code
            body = response.json() if response.content else {}
        except requests.RequestException as exc:
            status, body = -1, {"exception": str(exc)}
        with uploads.lock:
            uploads.statuses[status] += 1
            if status == 201:
                uploads.acknowledged[body["id"]] = body["sha256"]
                uploads.last_201 = time.monotonic()
            elif status != 503 or body.get("error", {}).get("code") != "database_unavailable":
                uploads.errors.append(f"{status}: {str(body)[:300]}")
        seed += 1000
        stop.wait(pause_s)


def start_clients(
    url: str, clients: int, pause_s: float, first_seed: int = 0
) -> tuple[Uploads, Callable[[], None]]:
    """Start `clients` upload threads (photos from `first_seed` on, distinct across
    clients); returns their record and a function that stops them."""
    uploads = Uploads()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=upload_until, args=(url, stop, uploads, first_seed + i, pause_s), daemon=True
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()

    def finish() -> None:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    return uploads, finish


@dataclass
class Counts:
    acknowledged: int
    stored: int
    processed: int
    lost: int
    duplicated: int
    settle_s: float | None  # None: not settled within the wait
    not_done: dict[int, str]  # id -> status of acknowledged photos not done

    def as_dict(self) -> dict[str, object]:
        return {
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "processed": self.processed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "settle_s": None if self.settle_s is None else round(self.settle_s, 1),
        }


def settle(
    database_url: str,
    uploads: Uploads,
    logs: Callable[[], str],
    timeout_s: float,
) -> Counts:
    """Wait until every acknowledged photo is done or failed (at most `timeout_s` after the
    last upload), then count."""
    engine = make_engine(Settings.from_env(database_url=database_url))
    ids = list(uploads.acknowledged)
    settled_at: float | None = None
    try:
        while True:
            with engine.connect() as conn:
                rows = dict(
                    conn.execute(sa.select(Photo.id, Photo.status).where(Photo.id.in_(ids))).all()
                )
            if all(rows.get(i) in ("done", "failed") for i in ids):
                settled_at = time.monotonic()
                break
            if time.monotonic() > uploads.last_201 + timeout_s:
                break
            time.sleep(0.5)
        with engine.connect() as conn:
            stored = dict(
                conn.execute(sa.select(Photo.id, Photo.sha256).where(Photo.id.in_(ids))).all()
            )
            status = dict(
                conn.execute(sa.select(Photo.id, Photo.status).where(Photo.id.in_(ids))).all()
            )
            # Detections of one (photo, version) beyond the most one run stores.
            per_run = conn.execute(
                sa.select(Detection.photo_id, Detection.model_version_id, sa.func.count())
                .where(Detection.photo_id.in_(ids))
                .group_by(Detection.photo_id, Detection.model_version_id)
            ).all()
    finally:
        engine.dispose()
    runs = Counter((int(p), int(v)) for p, v in RUN_LINE.findall(logs()))
    max_rows = int(os.environ.get("TRASHMAP_MAX_DETECTIONS", "20"))
    duplicated = sum(n - 1 for n in runs.values() if n > 1) + sum(
        1 for _, _, n in per_run if n > max_rows
    )
    kept = [i for i, sha in uploads.acknowledged.items() if stored.get(i) == sha]
    not_done = {i: status.get(i, "missing") for i in ids if status.get(i) != "done"}
    return Counts(
        acknowledged=len(ids),
        stored=len(kept),
        processed=sum(status.get(i) == "done" for i in ids),
        lost=len(ids) - len(kept) + sum(status.get(i) not in ("done", "failed") for i in kept),
        duplicated=duplicated,
        settle_s=None if settled_at is None else max(0.0, settled_at - uploads.last_201),
        not_done=not_done,
    )


def kill_workers_while_uploading(
    workers: list[SoakWorker],
    url: str,
    kills: int,
    gap_s: tuple[float, float],
    clients: int,
    pause_s: float,
    seed: int = 0,
) -> tuple[Uploads, int]:
    """Clients upload while `kills` times a random worker's process group is SIGKILLed at a
    random moment and started again; uploads stop after the last kill."""
    rng = random.Random(seed)
    uploads, finish = start_clients(url, clients, pause_s, first_seed=KILL_SEEDS)
    done = 0
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(*gap_s))
            victim = rng.choice(workers)
            victim.kill()
            victim.start()
            done += 1
        time.sleep(rng.uniform(*gap_s))
    finally:
        finish()
    return uploads, done


def table(rows: list[tuple[str, Counts]]) -> str:
    """Counts as a Markdown table (RELIABILITY.md's columns)."""
    head = "| run | acknowledged | stored | processed | lost | duplicated | settled after |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in rows:
        settle_text = "not settled" if c.settle_s is None else f"{c.settle_s:.1f} s"
        lines.append(
            f"| {name} | {c.acknowledged} | {c.stored} | {c.processed} | {c.lost} "
            f"| {c.duplicated} | {settle_text} |"
        )
    return "\n".join(lines)


# --- the scenarios, as the tests and bench/soak_workers.py run them -----------------------


@dataclass
class Result:
    counts: Counts
    uploads: Uploads
    logs: str  # the workers' logs
    web_log: str = ""
    kills: int = 0


# The soaks test recovery, not the model: the small detector on tiny inputs keeps up with
# the uploads on a 2-core CI machine.
TINY_DETECTOR = {"TRASHMAP_MIN_SIZE": "64", "TRASHMAP_MAX_SIZE": "96"}


def _env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    from tests.conftest import settings_env

    return {**settings_env(settings), **TINY_DETECTOR, **(extra or {})}


def kill_soak(
    settings: Settings,
    workdir: Path,
    kills: int,
    gap_s: tuple[float, float],
    clients: int,
    pause_s: float,
    settle_wait_s: float,
    workers: int = 2,
    seed: int = 0,
) -> Result:
    """`workers` workers and gunicorn; clients upload while random workers' process groups
    are SIGKILLed `kills` times and restarted; then every acknowledged photo is counted."""
    from tests.reliability.servers import WebServer

    env = _env(settings)
    pool = [SoakWorker(env, workdir / f"worker{i}.log") for i in range(workers)]
    web = WebServer({**env, "TRASHMAP_RATE_LIMIT_ENABLED": "0"}, workdir / "web.log", workers=1)
    try:
        for worker in pool:
            worker.wait_ready()
        web.wait_listening()
        uploads, done = kill_workers_while_uploading(
            pool, web.url, kills, gap_s, clients, pause_s, seed
        )
        counts = settle(
            settings.database_url, uploads, lambda: "".join(w.log() for w in pool), settle_wait_s
        )
    finally:
        web.stop()
        for worker in pool:
            worker.stop()
    return Result(counts, uploads, "".join(w.log() for w in pool), kills=done)


def redis_outage_soak(
    settings: Settings,
    redis_server: PrivateRedis,
    workdir: Path,
    outage_s: float,
    clients: int,
    web_workers: int,
    settle_wait_s: float,
) -> Result:
    """Clients upload to gunicorn (rate limits on, counted in Redis) while the broker's
    Redis is stopped for `outage_s` and started again, empty."""
    from tests.reliability.servers import WebServer

    env = _env(replace(settings, broker_url=redis_server.url))
    worker = SoakWorker(env, workdir / "worker.log")
    web_env = {
        **env,
        "TRASHMAP_RATE_LIMIT_ENABLED": "1",
        "TRASHMAP_RATE_LIMIT_UPLOAD": "100000/minute",
        "TRASHMAP_RATE_LIMIT_READ": "100000/minute",
    }
    web = WebServer(web_env, workdir / "web.log", workers=web_workers)
    try:
        worker.wait_ready()
        web.wait_listening()
        uploads, finish = start_clients(web.url, clients, pause_s=0.3, first_seed=REDIS_SEEDS)
        try:
            time.sleep(4)
            redis_server.stop()
            time.sleep(outage_s)
            redis_server.start()  # same port, empty: the messages it held are gone too
            time.sleep(4)
        finally:
            finish()
        counts = settle(settings.database_url, uploads, worker.log, settle_wait_s)
    finally:
        web.stop()
        worker.stop()
    return Result(counts, uploads, worker.log(), web.log_path.read_text(errors="replace"))


def postgres_restart_soak(
    settings: Settings,
    pg: PrivatePostgres,
    workdir: Path,
    photos: int,
    down_s: float,
    settle_wait_s: float,
) -> Result:
    """Two workers (TRASHMAP_MAX_ATTEMPTS=1, batches that wait 3 s to fill) take the
    photos; PostgreSQL is stopped while some are mid-batch and started after `down_s`."""
    from trashmap import migrate
    from web import create_app

    settings = replace(settings, database_url=pg.url)
    migrate.upgrade(settings)
    env = _env(settings, {"TRASHMAP_MAX_ATTEMPTS": "1", "TRASHMAP_BATCH_WAIT_MS": "3000"})
    pool = [SoakWorker(env, workdir / f"worker{i}.log") for i in range(2)]
    app = create_app(settings)
    engine = make_engine(settings)
    uploads = Uploads()
    try:
        for worker in pool:
            worker.wait_ready()
        client = app.test_client()
        for seed in range(photos):
            response = client.post(
                "/api/v1/photos",
                data={"file": (io.BytesIO(noise_jpeg(seed, (640, 480))), "p.jpg")},
                content_type="multipart/form-data",
            )
            uploads.statuses[response.status_code] += 1
            if response.status_code == 201:
                body = response.get_json()
                uploads.acknowledged[body["id"]] = body["sha256"]
        app.extensions["trashmap"].engine.dispose()
        _wait_until_processing(engine, list(uploads.acknowledged))
        engine.dispose()
        pg.stop()
        time.sleep(down_s)
        pg.start()
        uploads.last_201 = time.monotonic()  # "settled after" counts from the restart
        counts = settle(
            settings.database_url, uploads, lambda: "".join(w.log() for w in pool), settle_wait_s
        )
    finally:
        for worker in pool:
            worker.stop()
        engine.dispose()
    return Result(counts, uploads, "".join(w.log() for w in pool))


def _wait_until_processing(engine: sa.Engine, ids: list[int], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            processing = conn.scalar(
                sa.select(sa.func.count())
                .select_from(Photo)
                .where(Photo.id.in_(ids), Photo.status == "processing")
            )
        if processing:
            return
        time.sleep(0.05)
    raise TimeoutError("no photo reached processing")
