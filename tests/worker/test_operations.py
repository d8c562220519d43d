"""Model rollout, reprocessing, the reconciler and metrics, against a real worker process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REDIS_URL, WorkerProcess, settings_env, wait_for_status
from tests.worker.conftest import (
    deactivate_all,
    detections_by_version,
    free_port,
    photo_row,
    store_photo,
)
from trashmap.cli import cli
from trashmap.db import make_session_factory
from trashmap.models import ModelVersion, Photo
from worker.reconcile import PeriodicReconciler

# Real worker processes (and servers): the slow tier.
pytestmark = pytest.mark.slow

PHOTO_A = "exifsamples__jpg_gps_DSCN0010.jpg"
PHOTO_B = "exifsamples__jpg_gps_DSCN0012.jpg"
PHOTO_C = "exiftool__t_images_GPS.jpg"


def _cli(pg_settings, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        cli, list(args), env=settings_env(pg_settings), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def versions(pg_settings, pg_engine, small_checkpoints) -> Iterator[list[int]]:  # type: ignore[no-untyped-def]
    """Both checkpoints registered; the first one active."""
    _cli(pg_settings, "models", "register", str(small_checkpoints[0]), "--activate")
    _cli(pg_settings, "models", "register", str(small_checkpoints[1]))
    with make_session_factory(pg_engine)() as session:
        ids = list(
            session.scalars(
                sa.select(ModelVersion.id)
                .where(
                    ModelVersion.version.like("%seed1-%") | ModelVersion.version.like("%seed2-%")
                )
                .order_by(ModelVersion.version)
            )
        )
    assert len(ids) == 2
    yield ids
    deactivate_all(pg_engine)


@pytest.fixture(scope="module")
def ops_worker(  # type: ignore[no-untyped-def]
    pg_settings, pg_engine, versions, tmp_path_factory
) -> Iterator[tuple[WorkerProcess, int]]:
    """A worker following the active version (checked every 0.2 s), with metrics on a port."""
    redis.Redis.from_url(REDIS_URL).delete(pg_settings.queue_name)
    port = free_port()
    worker = WorkerProcess(
        pg_settings,
        tmp_path_factory.mktemp("ops") / "worker.log",
        extra_env={
            "TRASHMAP_MODEL_CHECK_S": "0.2",
            "TRASHMAP_METRICS_PORT": str(port),
            "TRASHMAP_RECONCILE_INTERVAL_S": "0",
            "TRASHMAP_BATCH_SIZE": "4",
        },
    )
    try:
        worker.wait_ready(None)
        yield worker, port
    finally:
        worker.stop()


def _process(pg_sessions, producer, name: str, version: int | None = None) -> int:  # type: ignore[no-untyped-def]
    photo_id = store_photo(pg_sessions, name)
    producer.send(photo_id, version)
    assert wait_for_status(pg_sessions, [photo_id], 120) == {photo_id: "done"}
    return photo_id


def test_worker_starts_on_the_active_version_and_follows_a_new_one(
    pg_settings,
    pg_sessions,
    producer,
    versions,
    ops_worker,  # type: ignore[no-untyped-def]
) -> None:
    first, second = versions
    worker, _ = ops_worker
    assert "ready: model untrained:" in worker.log() and f"(version {first})" in worker.log()
    photo = _process(pg_sessions, producer, PHOTO_A)
    assert photo_row(pg_sessions, photo).model_version_id == first

    _cli(pg_settings, "models", "activate", str(second))
    time.sleep(0.5)  # past TRASHMAP_MODEL_CHECK_S, so the next batch checks
    photo = _process(pg_sessions, producer, PHOTO_B)
    assert photo_row(pg_sessions, photo).model_version_id == second, worker.log()[-3000:]
    assert set(detections_by_version(pg_sessions, photo)) == {second}
    assert "switching to newly active model version" in worker.log()
    listing = _cli(pg_settings, "models", "list")
    assert f"* {second:>4}" in listing


def test_reprocessing_adds_the_other_versions_detections_and_keeps_the_first(
    pg_settings,
    pg_sessions,
    producer,
    versions,
    ops_worker,  # type: ignore[no-untyped-def]
) -> None:
    first, second = versions
    _cli(pg_settings, "models", "activate", str(second))
    photo = _process(pg_sessions, producer, PHOTO_C)
    before = detections_by_version(pg_sessions, photo)
    assert set(before) == {second} and before[second] > 0

    out = _cli(pg_settings, "reprocess", "--model", str(first), "--bbox", "-180,-90,180,90")
    assert "queued 1 of 1 photos" in out
    assert wait_for_status(pg_sessions, [photo], 120) == {photo: "done"}
    deadline = time.monotonic() + 120
    while set(detections_by_version(pg_sessions, photo)) != {first, second}:
        assert time.monotonic() < deadline, ops_worker[0].log()[-3000:]
        time.sleep(0.3)
    after = detections_by_version(pg_sessions, photo)
    assert after[second] == before[second], "the earlier version's detections must stay"
    assert after[first] > 0
    assert photo_row(pg_sessions, photo).model_version_id == first


def test_reconcile_requeues_a_photo_whose_message_was_lost(
    pg_settings,
    pg_sessions,
    ops_worker,  # type: ignore[no-untyped-def]
) -> None:
    lost = store_photo(pg_sessions, PHOTO_A)  # queued, but no message was ever sent
    stuck = store_photo(pg_sessions, PHOTO_B)
    with pg_sessions.begin() as session:  # a worker died mid-photo, long ago
        session.execute(
            sa.update(Photo)
            .where(Photo.id == stuck)
            .values(status="processing", updated_at=sa.func.now() - sa.text("interval '2 hours'"))
        )
    out = _cli(pg_settings, "reconcile", "--older-than", "0")
    assert "re-queued 2 of 2" in out
    assert wait_for_status(pg_sessions, [lost, stuck], 120) == {lost: "done", stuck: "done"}
    assert "re-queued 0 of 0" in _cli(pg_settings, "reconcile", "--older-than", "3600")


def test_the_periodic_reconciler_requeues_too(pg_settings, pg_sessions, ops_worker) -> None:  # type: ignore[no-untyped-def]
    lost = store_photo(pg_sessions, PHOTO_C)
    thread = PeriodicReconciler(replace(pg_settings, reconcile_interval_s=1, reconcile_after_s=0))
    thread.start()
    try:
        assert wait_for_status(pg_sessions, [lost], 120) == {lost: "done"}
    finally:
        thread.stopped.set()
        thread.join(timeout=30)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_show_the_counters_after_a_run(
    pg_sessions,
    producer,
    versions,
    ops_worker,
    client,  # type: ignore[no-untyped-def]
) -> None:
    _, port = ops_worker
    _process(pg_sessions, producer, PHOTO_A)
    worker = _samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
    # Every photo this module's worker finished, including this one.
    assert worker[("trashmap_worker_photos_total", (("outcome", "done"),))] >= 6
    assert worker[("trashmap_worker_detections_total", ())] > 0
    for stage in ("load", "decode", "wait", "inference", "write"):
        assert worker[("trashmap_worker_stage_seconds_count", (("stage", stage),))] >= 6
    assert worker[("trashmap_worker_batch_size_count", ())] >= 1
    assert any(
        name == "trashmap_worker_model_info" and value == 1 for (name, _), value in worker.items()
    )

    web = _samples(client.get("/metrics").get_data(as_text=True))
    assert web[("trashmap_photos", (("status", "done"),))] >= 1
    assert web[("trashmap_queue_depth", (("queue", producer.settings.queue_name),))] >= 0
    assert client.get("/readyz").status_code == 200


def test_upload_counters_count_outcomes(client) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import PHOTOS_DIR, post_photo

    def count(outcome: str, code: str) -> float:
        text = client.get("/metrics").get_data(as_text=True)
        return _samples(text).get(
            ("trashmap_uploads_total", (("code", code), ("outcome", outcome))), 0.0
        )

    created, duplicate = count("created", ""), count("duplicate", "")
    rejected = count("rejected", "not_an_image")
    assert post_photo(client, PHOTOS_DIR / PHOTO_A).status_code == 201
    assert post_photo(client, PHOTOS_DIR / PHOTO_A).status_code == 200
    response = client.post(
        "/api/v1/photos",
        data={"file": (__import__("io").BytesIO(b"x"), "a")},
        content_type="multipart/form-data",
    )
    assert response.status_code in (415, 422, 400)
    assert count("created", "") == created + 1
    assert count("duplicate", "") == duplicate + 1
    assert count("rejected", response.get_json()["error"]["code"]) >= rejected + (
        response.get_json()["error"]["code"] == "not_an_image"
    )
