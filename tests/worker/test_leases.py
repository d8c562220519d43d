"""Leases in-process on PostgreSQL: a living worker keeps its photos, a dead one's are taken
back and run elsewhere, a run that lost its lease cannot write, outages cost no attempt."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tests.worker.conftest import photo_row, store_photo
from trashmap.models import Detection, ModelVersion, Photo
from trashmap.queue import DetectionQueue
from worker import pipeline
from worker.leases import Membership
from worker.reconcile import reconcile

PHOTO = "exiftool__t_images_GPS.jpg"
BOX = [("class_1", 0.9, (1.0, 2.0, 30.0, 40.0))]


def _version(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        row = session.scalar(sa.select(ModelVersion).where(ModelVersion.name == "lease-test"))
        if row is None:
            row = ModelVersion(name="lease-test", version="1", arch="x", class_names=["a"])
            session.add(row)
            session.flush()
        return row.id


def _reconcile(sessions: sessionmaker[Session], producer: DetectionQueue) -> list[int]:
    # The queued / lease-less limits are far away: only leases are looked at.
    return reconcile(sessions, producer, 3600, 3600, lease_timeout_s=2).reclaimed


def test_a_slow_living_worker_keeps_its_photo_and_a_dead_ones_is_taken_back(
    pg_sessions: sessionmaker[Session], producer: DetectionQueue, membership: Membership
) -> None:
    photo_id = store_photo(pg_sessions, PHOTO)
    assert pipeline.start(pg_sessions, photo_id, 3, membership) is not None
    time.sleep(3)  # longer than the lease timeout: only the heartbeat keeps the lease
    assert _reconcile(pg_sessions, producer) == []
    assert photo_row(pg_sessions, photo_id).status == "processing"

    membership.close(remove=False)  # the process dies: no heartbeat, its row stays
    deadline = time.monotonic() + 10
    reclaimed: list[int] = []
    while not reclaimed and time.monotonic() < deadline:
        reclaimed = _reconcile(pg_sessions, producer)
        time.sleep(0.2)
    assert reclaimed == [photo_id]
    photo = photo_row(pg_sessions, photo_id)
    assert (photo.status, photo.leased_by, photo.attempts) == ("queued", None, 1)


def test_a_run_that_lost_its_lease_cannot_write_over_the_run_that_replaced_it(
    pg_sessions: sessionmaker[Session], producer: DetectionQueue
) -> None:
    version = _version(pg_sessions)
    photo_id = store_photo(pg_sessions, PHOTO)
    first = Membership(pg_sessions, "first", heartbeat_s=0.2, lease_timeout_s=0.5)
    second = Membership(pg_sessions, "second", heartbeat_s=0.2, lease_timeout_s=2)
    try:
        stale = pipeline.start(pg_sessions, photo_id, 3, first)
        assert stale is not None
        first.close(remove=False)
        time.sleep(1)
        assert _reconcile(pg_sessions, producer) == [photo_id]
        fresh = pipeline.start(pg_sessions, photo_id, 3, second)
        assert fresh is not None and fresh.lease_token > stale.lease_token

        # The first run wakes up late: neither its result nor its failure lands.
        assert not pipeline.write_detections(
            pg_sessions, photo_id, version, BOX * 3, stale.lease_token
        )
        assert not pipeline.mark_failed(pg_sessions, photo_id, "late", stale.lease_token)
        assert pipeline.write_detections(pg_sessions, photo_id, version, BOX, fresh.lease_token)
        # ... not even after the photo is done.
        assert not pipeline.write_detections(
            pg_sessions, photo_id, version, BOX * 3, stale.lease_token
        )
    finally:
        first.close()
        second.close()
    with pg_sessions() as session:
        stored = session.scalar(
            sa.select(sa.func.count()).select_from(Detection).where(Detection.photo_id == photo_id)
        )
    assert stored == 1
    assert photo_row(pg_sessions, photo_id).status == "done"


def test_a_photo_running_on_a_living_worker_is_not_started_twice(
    pg_sessions: sessionmaker[Session], membership: Membership
) -> None:
    photo_id = store_photo(pg_sessions, PHOTO)
    other = Membership(pg_sessions, "other", heartbeat_s=0.2, lease_timeout_s=2)
    try:
        assert pipeline.start(pg_sessions, photo_id, 3, membership) is not None
        with pytest.raises(pipeline.Busy):
            pipeline.start(pg_sessions, photo_id, 3, other)  # a redelivered duplicate
        with pytest.raises(pipeline.Busy):
            pipeline.start(pg_sessions, photo_id, 3, membership)  # and in the same process
    finally:
        other.close()
    assert photo_row(pg_sessions, photo_id).leased_by == membership.worker_id


def test_retries_after_outages_do_not_use_up_the_attempts(
    pg_sessions: sessionmaker[Session], membership: Membership
) -> None:
    """Each retry of a task that hit a database outage starts the photo again; with
    TRASHMAP_MAX_ATTEMPTS=3 the fourth start used to fail it as a crash."""
    photo_id = store_photo(pg_sessions, PHOTO)
    for _ in range(6):
        assert pipeline.start(pg_sessions, photo_id, 3, membership) is not None
        membership.release(photo_id)  # the run ended with the outage's exception
    photo = photo_row(pg_sessions, photo_id)
    assert (photo.status, photo.attempts) == ("processing", 0)


def test_a_photo_whose_worker_died_each_time_is_given_up_on(
    pg_sessions: sessionmaker[Session],
) -> None:
    photo_id = store_photo(pg_sessions, PHOTO)
    for attempt in range(2):
        member = Membership(pg_sessions, f"doomed{attempt}", heartbeat_s=0.2, lease_timeout_s=2)
        assert pipeline.start(pg_sessions, photo_id, 2, member) is not None
        member.close(remove=False)  # killed mid-photo
    survivor = Membership(pg_sessions, "survivor", heartbeat_s=0.2, lease_timeout_s=2)
    try:
        with pytest.raises(pipeline.GaveUp, match="gave up after 2 attempts"):
            pipeline.start(pg_sessions, photo_id, 2, survivor)
    finally:
        survivor.close()
    with pg_sessions() as session:
        assert session.get(Photo, photo_id).attempts == 1  # the give-up itself wrote nothing
