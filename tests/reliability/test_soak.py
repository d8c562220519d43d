"""Soak tests, bounded for CI: workers SIGKILLed during uploads, Redis stopped during
uploads, PostgreSQL restarted while workers are mid-batch. Default recovery settings, no
operator command. Longer forms: bench/soak_workers.py (tests/reliability/soak.py runs both)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.reliability.servers import PrivatePostgres, PrivateRedis
from tests.reliability.soak import kill_soak, postgres_restart_soak, redis_outage_soak

pytestmark = pytest.mark.slow

KILLS = 20
SETTLE_BOUND_S = 90  # the bound: the last photo settles within 90 s of the last upload
FALLBACK_LINE = "falling back to in-memory storage"


def test_two_workers_killed_20_times_during_uploads_every_photo_is_done_once(
    pg_settings,
    pg_sessions,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    settings = replace(pg_settings, queue_name=f"{pg_settings.queue_name}.soak")
    result = kill_soak(
        settings,
        tmp_path,
        KILLS,
        gap_s=(2.0, 9.0),
        clients=1,
        pause_s=1.5,
        settle_wait_s=SETTLE_BOUND_S + 30,
        seed=11,
    )
    counts = result.counts
    record(**counts.as_dict(), kills=result.kills)
    assert result.kills == KILLS
    assert not result.uploads.errors, result.uploads.errors[:5]
    assert counts.acknowledged > 20, "too few uploads to prove anything"
    assert counts.not_done == {}, (counts.not_done, result.logs[-4000:])
    assert (counts.lost, counts.duplicated) == (0, 0), counts
    assert counts.processed == counts.acknowledged == counts.stored
    assert counts.settle_s is not None and counts.settle_s <= SETTLE_BOUND_S, counts


@pytest.fixture
def private_redis(tmp_path):  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_stopped_while_4_clients_upload_every_photo_is_done(
    pg_settings,
    pg_sessions,
    private_redis,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    """Uploads answer 201 `queued` while Redis is down (20 s here, 60 s in the bench); the
    workers' reconciler sends the photos whose messages never reached the broker once it
    answers again; rate limits count in each web process's memory meanwhile and say so once."""
    settings = replace(pg_settings, queue_name=f"{pg_settings.queue_name}.redis")
    web_workers = 2
    result = redis_outage_soak(
        settings, private_redis, tmp_path, 20, clients=4, web_workers=2, settle_wait_s=150
    )
    counts = result.counts
    record(**counts.as_dict(), **{f"answered_{k}": v for k, v in result.uploads.statuses.items()})
    assert not result.uploads.errors, result.uploads.errors[:5]
    assert set(result.uploads.statuses) <= {201, 503}, result.uploads.statuses
    assert counts.not_done == {}, (counts.not_done, result.logs[-4000:])
    assert (counts.lost, counts.duplicated) == (0, 0), counts
    fallbacks = result.web_log.count(FALLBACK_LINE)
    assert 1 <= fallbacks <= web_workers, f"{fallbacks} rate-limit fallback warnings"


@pytest.fixture
def private_pg():  # type: ignore[no-untyped-def]
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


def test_postgres_restarted_while_workers_are_mid_batch_no_photo_is_lost_or_stuck(
    pg_settings,
    private_pg,
    tmp_path,
    record,  # type: ignore[no-untyped-def]
) -> None:
    """With TRASHMAP_MAX_ATTEMPTS=1, a retry after the outage that counted as an attempt
    would fail its photo as a crash."""
    settings = replace(pg_settings, queue_name=f"{pg_settings.queue_name}.pgrestart")
    photos = 12
    result = postgres_restart_soak(
        settings, private_pg, tmp_path, photos, down_s=5, settle_wait_s=240
    )
    counts = result.counts
    record(**counts.as_dict())
    assert "transient error" in result.logs, "no run met the outage: the test proved nothing"
    assert counts.acknowledged == photos
    assert counts.not_done == {}, (counts.not_done, result.logs[-4000:])
    assert (counts.lost, counts.duplicated) == (0, 0), counts
