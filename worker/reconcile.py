"""The reconciler: photos left queued or processing too long are queued again.

A message the broker lost, a worker killed between acknowledging and writing, an upload
whose enqueue failed: the photo row still says queued/processing, so sending it again
loses nothing (detection replaces its own version's rows). One reconciler acts at a time:
a PostgreSQL advisory lock is taken for the selection.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from trashmap import rollup
from trashmap.db import make_engine, make_session_factory, session_scope
from trashmap.models import Photo, PhotoStatus, utcnow
from trashmap.queue import DetectionQueue
from trashmap.settings import Settings
from worker import metrics

logger = logging.getLogger(__name__)

LOCK_KEY = 0x7472_6D61  # any constant shared by all trashmap reconcilers


@dataclass(frozen=True)
class ReconcileResult:
    requeued: list[int]
    sent: int
    skipped: bool = False  # another reconciler held the lock


def processing_limit_s(settings: Settings, queued_after_s: int) -> int:
    """A photo processing longer than the broker's redelivery time is lost, not slow."""
    return max(queued_after_s, settings.task_time_limit_s * 2 + 120)


def claim_stuck(
    session: Session, queued_after_s: float, processing_after_s: float, limit: int
) -> list[int] | None:
    """Ids of stuck photos, marked queued with a fresh updated_at; None if the lock is held."""
    if session.get_bind().dialect.name == "postgresql":
        got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        if not got:
            return None
    now = utcnow()
    query = (
        select(Photo.id)
        .where(
            or_(
                (Photo.status == PhotoStatus.queued.value)
                & (Photo.updated_at <= now - timedelta(seconds=queued_after_s)),
                (Photo.status == PhotoStatus.processing.value)
                & (Photo.updated_at <= now - timedelta(seconds=processing_after_s)),
            )
        )
        .order_by(Photo.updated_at)
        .limit(limit)
    )
    ids = list(session.scalars(query))
    if ids:
        session.execute(
            update(Photo)
            .where(Photo.id.in_(ids))
            .values(status=PhotoStatus.queued.value, updated_at=now)
        )
    return ids


def reconcile(
    sessions: sessionmaker[Session],
    producer: DetectionQueue,
    queued_after_s: float,
    processing_after_s: float,
    limit: int = 1000,
) -> ReconcileResult:
    """Re-queue stuck photos (committed before sending, so a failed send is retried later)."""
    with session_scope(sessions) as session:
        ids = claim_stuck(session, queued_after_s, processing_after_s, limit)
    if ids is None:
        logger.info("reconcile: another reconciler is running; skipped")
        return ReconcileResult([], 0, skipped=True)
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
    return ReconcileResult(ids, sent)


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
        try:
            while not self.stopped.wait(self.settings.reconcile_interval_s):
                try:
                    reconcile(sessions, producer, after, processing_limit_s(self.settings, after))
                    rollup.fold_quietly(sessions)  # deltas of writes no worker folded
                except Exception:
                    logger.exception("reconcile: run failed; trying again next interval")
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
            "reconcile: every %s s, photos queued for over %s s",
            settings.reconcile_interval_s,
            settings.reconcile_after_s,
        )


def stop_periodic() -> None:
    if _periodic is not None:
        _periodic.stopped.set()
