"""Faults with real processes: database restarts under load and workers killed mid-photo."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import requests
import sqlalchemy as sa
from PIL import Image

from tests.conftest import PHOTOS_DIR, ROOT, WorkerProcess, settings_env, wait_for_status
from tests.reliability.servers import PrivatePostgres, PrivateRedis, WebServer
from trashmap import migrate
from trashmap.db import make_engine
from trashmap.models import Detection, Photo
from web import create_app

# Real worker processes (and servers): the slow tier.
pytestmark = pytest.mark.slow

# A big model on a big photo, so there is time to kill a worker mid-detection.
SLOW_DETECTOR_ENV = {
    "TRASHMAP_UNTRAINED_ARCH": "fasterrcnn_resnet50_fpn_v2",
    "TRASHMAP_MIN_SIZE": "640",
    "TRASHMAP_MAX_SIZE": "1066",
}


def noise_jpeg(seed: int, size: tuple[int, int] = (48, 32)) -> bytes:
    """A small, distinct JPEG per seed."""
    rng = random.Random(seed)
    image = Image.frombytes(
        "RGB", size, bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3))
    )
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture
def private_pg():  # type: ignore[no-untyped-def]
    pg = PrivatePostgres()
    try:
        yield pg
    finally:
        pg.destroy()


def test_postgres_restart_under_load_gives_503_then_recovers_and_loses_nothing(
    pg_settings,
    private_pg,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    pg = private_pg
    pg.start()
    settings = replace(pg_settings, database_url=pg.url)
    migrate.upgrade(settings)
    env = settings_env(settings)
    env["TRASHMAP_BROKER_URL"] = "memory://"  # no worker here: only the upload path matters
    env["TRASHMAP_RATE_LIMIT_ENABLED"] = "0"  # one client IP on purpose sends a flood
    web = WebServer(env, tmp_path / "web.log", workers=2)
    results: list[tuple[int, int, dict]] = []
    stop = threading.Event()

    def client(offset: int) -> None:
        seed = offset
        while not stop.is_set():
            try:
                response = requests.post(
                    f"{web.url}/api/v1/photos",
                    timeout=30,
                    files={"file": ("p.jpg", noise_jpeg(seed))},
                )
                results.append((seed, response.status_code, response.json()))
            except requests.RequestException as exc:  # connection-level errors are a failure
                results.append((seed, -1, {"exception": str(exc)}))
            seed += 1000
            time.sleep(0.02)

    try:
        web.wait_listening()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        pg.stop()
        time.sleep(3)
        pg.start()
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        stop.set()
        web.stop()

    statuses = [status for _, status, _ in results]
    assert -1 not in statuses, [r for r in results if r[1] == -1][:3]
    assert set(statuses) <= {201, 503}, set(statuses)
    assert 503 in statuses, "the outage was never observed: the test proved nothing"
    outage = [body for _, status, body in results if status == 503]
    assert all(body["error"]["code"] == "database_unavailable" for body in outage)
    first_503 = statuses.index(503)
    assert 201 in statuses[first_503:], "uploads did not recover after the restart"

    acknowledged = {body["id"]: body["sha256"] for _, status, body in results if status == 201}
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            stored = dict(conn.execute(sa.select(Photo.id, Photo.sha256)).all())
    finally:
        engine.dispose()
    lost = [i for i, sha in acknowledged.items() if stored.get(i) != sha]
    record(
        acknowledged=len(acknowledged),
        answered_503=statuses.count(503),
        stored=len(stored),
        processed=0,
        lost=len(lost),
        duplicated=len(stored) - len(set(stored.values())),
    )
    assert not lost, f"photos {lost} answered 201 but are not stored"


def _process_tree(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                children.append(int(entry))
    return children


@pytest.mark.parametrize("victim", ["whole worker", "detection child"])
def test_worker_killed_mid_detection_photo_is_processed_exactly_once(
    victim,
    pg_settings,
    pg_sessions,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    """Default recovery settings; no operator command. A whole worker killed: the other
    worker runs the photo again within 60 s (its lease runs out, the reconciler takes it
    back). A prefork child killed: the parent's new child takes the redelivered task."""
    slow = dict(SLOW_DETECTOR_ENV)
    settings = replace(pg_settings, queue_name=f"{pg_settings.queue_name}.kill{victim[0]}")
    # prefork: the model lives in a child process that the parent replaces when it dies.
    pool = ("--pool", "prefork") if victim == "detection child" else ()
    workers = [WorkerProcess(settings, tmp_path / "first.log", slow, args=pool)]
    if victim == "whole worker":
        workers.append(WorkerProcess(settings, tmp_path / "second.log", slow))
    try:
        for worker in workers:
            worker.wait_ready(pg_sessions)
        photo = PHOTOS_DIR / "exifsamples__jpg_hdr_iphone_hdr_NO.jpg"
        photo_id = post_photo_to(create_app(settings), photo)
        _wait_for_status_value(pg_sessions, photo_id, "processing")
        if victim == "whole worker":
            holder_pid = _holder_pid(pg_sessions, photo_id)
            (victim_worker,) = [w for w in workers if w.proc.pid == holder_pid]
            for pid in _process_tree(holder_pid):
                os.kill(pid, signal.SIGKILL)
            os.kill(holder_pid, signal.SIGKILL)
            victim_worker.proc.wait()
            killed_at = time.monotonic()
            _wait_for_restart(pg_sessions, photo_id, holder_pid, timeout_s=90)
            assert time.monotonic() - killed_at <= 60, "not run again within 60 s of the kill"
        else:
            children = _process_tree(workers[0].proc.pid)
            assert children, "prefork worker has no child process"
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        statuses = wait_for_status(pg_sessions, [photo_id], timeout_s=240)
        logs = "".join(worker.log() for worker in workers)
        assert statuses == {photo_id: "done"}, logs[-3000:]
        with pg_sessions() as session:
            rows = session.execute(
                sa.select(
                    Detection.model_version_id,
                    Detection.label,
                    Detection.x1,
                    Detection.y1,
                    Detection.x2,
                    Detection.y2,
                ).where(Detection.photo_id == photo_id)
            ).all()
        assert rows, "no detections: nothing proves the photo was processed"
        assert len(rows) == len(set(rows)), "duplicated detections"
        assert len({r.model_version_id for r in rows}) == 1
        assert len(rows) <= 20  # TRASHMAP_MAX_DETECTIONS of the test workers: one run's worth
        # The killed run never finished; exactly one run stored detections.
        runs = stored_runs(logs, photo_id)
        record(
            acknowledged=1,
            stored=1,
            processed=int(statuses[photo_id] == "done"),
            lost=0,
            duplicated=max(0, runs - 1),
        )
        assert runs == 1, logs[-3000:]
    finally:
        for worker in workers:
            worker.stop()


def stored_runs(logs: str, photo_id: int) -> int:
    """Runs of this photo that stored their detections, from the workers' logs."""
    return sum(
        f"photo {photo_id}: " in line and " detections (" in line for line in logs.splitlines()
    )


def _holder_pid(sessions, photo_id: int) -> int:  # type: ignore[no-untyped-def]
    from trashmap.models import Worker

    with sessions() as session:
        photo = session.get(Photo, photo_id)
        return session.get(Worker, photo.leased_by).pid


def _wait_for_restart(sessions, photo_id: int, dead_pid: int, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    """Until the photo runs (or ran) on a process other than `dead_pid`."""
    from trashmap.models import Worker

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions() as session:
            photo = session.get(Photo, photo_id)
            if photo.status == "done":
                return
            holder = session.get(Worker, photo.leased_by) if photo.leased_by else None
            if photo.status == "processing" and holder is not None and holder.pid != dead_pid:
                return
        time.sleep(0.2)
    raise TimeoutError(f"photo {photo_id} was not run again within {timeout_s} s")


def test_a_photo_that_keeps_killing_its_worker_is_failed_after_max_attempts(
    pg_settings,
    pg_sessions,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    """The OOM killer takes the detection process down on every try: after 2 tries, give up."""
    slow = {**SLOW_DETECTOR_ENV, "TRASHMAP_MAX_ATTEMPTS": "2"}
    settings = replace(pg_settings, queue_name=f"{pg_settings.queue_name}.poison")
    worker = WorkerProcess(settings, tmp_path / "worker.log", slow, args=("--pool", "prefork"))
    try:
        worker.wait_ready(pg_sessions)
        photo_id = post_photo_to(
            create_app(settings), PHOTOS_DIR / "exifsamples__jpg_hdr_iphone_hdr_NO.jpg"
        )
        for crashes in (0, 1):  # `attempts` counts the runs whose worker died
            _wait_for_attempts(pg_sessions, photo_id, crashes)
            for pid in _process_tree(worker.proc.pid):
                os.kill(pid, signal.SIGKILL)
        assert wait_for_status(pg_sessions, [photo_id], timeout_s=180) == {photo_id: "failed"}
        with pg_sessions() as session:
            error = session.get(Photo, photo_id).error
        assert error.startswith("gave up after 2 attempts"), error
        # The worker itself lives on and takes the next photo.
        other = post_photo_to(create_app(settings), PHOTOS_DIR / "exiftool__t_images_GPS.jpg")
        assert wait_for_status(pg_sessions, [other], timeout_s=180) == {other: "done"}
        record(acknowledged=2, stored=2, processed=1, failed_with_reason=1, lost=0, duplicated=0)
    finally:
        worker.stop()


def post_photo_to(app, path) -> int:  # type: ignore[no-untyped-def]
    from tests.conftest import post_photo

    response = post_photo(app.test_client(), path)
    assert response.status_code == 201, response.get_json()
    app.extensions["trashmap"].engine.dispose()
    return response.get_json()["id"]


def _wait_for_attempts(sessions, photo_id: int, attempts: int, timeout_s: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions() as session:
            photo = session.get(Photo, photo_id)
            if photo.status == "processing" and photo.attempts == attempts:
                return
        time.sleep(0.05)
    raise TimeoutError(f"photo {photo_id} never started after {attempts} crashes")


def _wait_for_status_value(sessions, photo_id: int, wanted: str, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sessions() as session:
            if session.get(Photo, photo_id).status == wanted:
                return
        time.sleep(0.05)
    raise TimeoutError(f"photo {photo_id} never reached {wanted}")


@pytest.fixture
def private_redis(tmp_path):  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_uploads_during_a_redis_outage_are_kept_and_processed_after_it(
    pg_settings,
    pg_sessions,
    private_redis,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    settings = replace(
        pg_settings, broker_url=private_redis.url, queue_name=f"{pg_settings.queue_name}.outage"
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    app = create_app(settings)
    client = app.test_client()
    try:
        worker.wait_ready(pg_sessions)
        private_redis.stop()
        assert client.get("/readyz").status_code == 503  # not ready; still alive:
        assert client.get("/healthz").status_code == 200
        ids = []
        for seed in range(5):
            response = client.post(
                "/api/v1/photos",
                content_type="multipart/form-data",
                data={"file": (io.BytesIO(noise_jpeg(seed)), "p.jpg")},
            )
            assert response.status_code == 201, response.get_json()
            assert response.get_json()["status"] == "queued"
            ids.append(response.get_json()["id"])
        private_redis.start()  # same port: the worker reconnects by itself
        env = settings_env(settings)
        reconciled = subprocess.run(
            [sys.executable, "-m", "trashmap", "reconcile", "--older-than", "0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "re-queued 5 of 5" in reconciled.stdout, reconciled.stdout + reconciled.stderr
        statuses = wait_for_status(pg_sessions, ids, timeout_s=240)
        record(
            acknowledged=len(ids),
            stored=len(statuses),
            processed=sum(s == "done" for s in statuses.values()),
            lost=len(ids) - len(statuses),
            duplicated=0,
        )
        assert set(statuses.values()) == {"done"}, worker.log()[-3000:]
        assert client.get("/readyz").status_code == 200
    finally:
        worker.stop()
        app.extensions["trashmap"].engine.dispose()
