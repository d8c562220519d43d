"""The reconciler: photos left queued too long, or processing under a lease that ran out,
are queued again.

A message the broker lost, a worker killed mid-photo, an upload whose enqueue failed: the
photo row still says queued/processing, so sending it again loses nothing (detection
replaces its own version's rows, and a run that lost its lease cannot write). A dead
worker's photos run again within lease timeout + interval (30 + 10 s by default), long
before the broker's visibility timeout. One reconciler acts at a time: a PostgreSQL
advisory lock is taken for the selection.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from trashmap import rollup
from trashmap.db import make_engine, make_session_factory, session_scope
from trashmap.models import Photo, PhotoStatus, utcnow
from trashmap.queue import DetectionQueue
from trashmap.settings import Settings
from worker import metrics
from worker.leases import worker_alive

logger = logging.getLogger(__name__)

LOCK_KEY = 0x7472_6D61  # any constant shared by all trashmap reconcilers


@dataclass(frozen=True)
class ReconcileResult:
    requeued: list[int]
    sent: int
    skipped: bool = False  # another reconciler held the lock
    reclaimed: list[int] = field(default_factory=list)  # of requeued: leases that ran out


def processing_limit_s(settings: Settings, queued_after_s: int) -> int:
    """A photo processing without a lease (none was taken) longer than the broker's
    redelivery time is lost, not slow."""
    return max(queued_after_s, settings.task_time_limit_s * 2 + 120)


def claim_stuck(
    session: Session,
    queued_after_s: float,
    processing_after_s: float,
    limit: int,
    lease_timeout_s: float = Settings.lease_timeout_s,
    reclaim_leases: bool = True,
    idle_queued_after_s: float | None = None,
) -> tuple[list[int], list[int]] | None:
    """(ids to send again, of those the ones whose lease ran out), all marked queued with a
    fresh updated_at; None if another reconciler holds the lock.

    A photo taken back from a dead worker counts one attempt (see pipeline.start); one whose
    living worker let it go (an outage cut its run short) does not. `idle_queued_after_s`
    (given when no message waits in the broker) is the shorter limit for queued photos: with
    an empty queue, a photo queued that long has lost its message, or a dead worker held it.
    """
    if session.get_bind().dialect.name == "postgresql":
        got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        if not got:
            return None
    now = utcnow()
    processing = Photo.status == PhotoStatus.processing.value
    if idle_queued_after_s is not None:
        queued_after_s = min(queued_after_s, idle_queued_after_s)
    stale = [
        (Photo.status == PhotoStatus.queued.value)
        & (Photo.updated_at <= now - timedelta(seconds=queued_after_s)),
        processing
        & Photo.leased_by.is_(None)
        & (Photo.updated_at <= now - timedelta(seconds=processing_after_s)),
    ]
    ids = list(
        session.scalars(select(Photo.id).where(or_(*stale)).order_by(Photo.updated_at).limit(limit))
    )
    reclaimed: list[int] = []
    if reclaim_leases:
        expired = session.scalars(
            select(Photo)
            .where(processing, Photo.leased_by.is_not(None), Photo.lease_expires_at <= now)
            .order_by(Photo.lease_expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for photo in expired:
            if not worker_alive(session, photo.leased_by, lease_timeout_s):
                photo.attempts = (photo.attempts or 0) + 1
            logger.warning(
                "photo %s: lease of worker %s ran out; taking it back", photo.id, photo.leased_by
            )
            photo.status = PhotoStatus.queued.value
            photo.leased_by = None
            photo.lease_expires_at = None
            photo.updated_at = now
            reclaimed.append(photo.id)
    if ids:
        session.execute(
            update(Photo)
            .where(Photo.id.in_(ids))
            .values(status=PhotoStatus.queued.value, updated_at=now)
        )
    return ids + reclaimed, reclaimed


def reconcile(
    sessions: sessionmaker[Session],
    producer: DetectionQueue,
    queued_after_s: float,
    processing_after_s: float,
    limit: int = 1000,
    lease_timeout_s: float = Settings.lease_timeout_s,
    reclaim_leases: bool = True,
    idle_queued_after_s: float | None = None,
) -> ReconcileResult:
    """Re-queue stuck photos (committed before sending, so a failed send is retried later).

    With `idle_queued_after_s`, a photo queued that long is re-sent too when the broker's
    queue is empty (its message is lost, or a dead worker held it unacknowledged).
    """
    # Read before the photos: a message sent after this cannot make an old photo look lost.
    idle = (
        idle_queued_after_s if idle_queued_after_s is not None and producer.backlog() == 0 else None
    )
    with session_scope(sessions) as session:
        claimed = claim_stuck(
            session,
            queued_after_s,
            processing_after_s,
            limit,
            lease_timeout_s,
            reclaim_leases,
            idle,
        )
    if claimed is None:
        logger.info("reconcile: another reconciler is running; skipped")
        return ReconcileResult([], 0, skipped=True)
    ids, reclaimed = claimed
    sent = 0
    for photo_id in ids:
        try:
            producer.send(photo_id)
        except Exception as exc:  # kombu raises many connection error types
            logger.warning("photo %s: reconcile could not queue it (%s)", photo_id, exc)
            continue
        sent += 1
        logger.info("photo %s: re-queued by the reconciler", photo_id)
    metrics.REQUEUED.inc(sent)
    return ReconcileResult(ids, sent, reclaimed=reclaimed)


class PeriodicReconciler(threading.Thread):
    """Runs `reconcile` every interval inside a worker's main process."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="trashmap-reconciler", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()

    def run(self) -> None:
        engine = make_engine(self.settings)
        sessions = make_session_factory(engine)
        producer = DetectionQueue(self.settings)
        after = self.settings.reconcile_after_s
        # After the database was unreachable, every heartbeat is old: wait one lease timeout
        # of working database before taking leases back, so living workers renew theirs.
        trusted_from = time.monotonic()
        try:
            while not self.stopped.wait(self.settings.reconcile_interval_s):
                try:
                    reconcile(
                        sessions,
                        producer,
                        after,
                        processing_limit_s(self.settings, after),
                        lease_timeout_s=self.settings.lease_timeout_s,
                        reclaim_leases=time.monotonic() >= trusted_from,
                        idle_queued_after_s=self.settings.lease_timeout_s,
                    )
                    rollup.fold_quietly(sessions)  # deltas of writes no worker folded
                except Exception:
                    logger.exception("reconcile: run failed; trying again next interval")
                    trusted_from = time.monotonic() + self.settings.lease_timeout_s
        finally:
            producer.close()
            engine.dispose()


_periodic: PeriodicReconciler | None = None


def start_periodic(settings: Settings) -> None:
    """Start this process's reconciler thread unless TRASHMAP_RECONCILE_INTERVAL_S is 0."""
    global _periodic
    if settings.reconcile_interval_s and _periodic is None:
        _periodic = PeriodicReconciler(settings)
        _periodic.start()
        logger.info(
            "reconcile: every %s s, photos queued for over %s s or leased by a worker silent "
            "for %s s",
            settings.reconcile_interval_s,
            settings.reconcile_after_s,
            settings.lease_timeout_s,
        )


def stop_periodic() -> None:
    if _periodic is not None:
        _periodic.stopped.set()
