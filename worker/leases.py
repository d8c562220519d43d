"""Worker leases: every worker process keeps a `workers` row alive with a heartbeat, and a
photo it is processing names that row (`leased_by`) and carries a token (`lease_token`).

The heartbeat renews the lease of each photo the process is running, every `heartbeat_s`.
A lease that ran out (its worker died, or stopped running the photo after an outage) is
taken back by the reconciler and the photo run elsewhere; a slow but living worker keeps
renewing, so its photos stay its own.
The token grows with every start: a run that lost its lease cannot write its late result
over the run that replaced it (`worker/pipeline.py` checks it in the write's transaction).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import session_scope
from trashmap.models import Photo, PhotoStatus, Worker, utcnow

logger = logging.getLogger(__name__)

# Rows of this process's living memberships: a row with this pid but not listed here was
# left by an earlier process that had the same pid (a restarted container).
_LOCAL: set[int] = set()


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def worker_alive(session: Session, worker_id: int | None, lease_timeout_s: float) -> bool:
    """Whether a worker process still runs: a recent heartbeat and, when it runs on this
    host, a live process (a killed worker's photos need not wait out its timeout)."""
    if worker_id is None:
        return False
    row = session.get(Worker, worker_id)
    if row is None:  # it exited cleanly and removed its row
        return False
    if aware(row.heartbeat_at) < utcnow() - timedelta(seconds=lease_timeout_s):
        return False
    if row.host == socket.gethostname():
        if row.pid == os.getpid():
            return row.id in _LOCAL
        return pid_alive(row.pid)
    return True


def lease_held(session: Session, photo: Photo, lease_timeout_s: float) -> bool:
    """Whether a living run holds this processing photo: its lease is unexpired (renewed by
    its worker's heartbeat while the run goes on) and that worker is alive."""
    if photo.leased_by is None or photo.lease_expires_at is None:
        return False
    if aware(photo.lease_expires_at) <= utcnow():
        return False
    return worker_alive(session, photo.leased_by, lease_timeout_s)


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they are stored in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Membership:
    """This process's `workers` row, its heartbeat thread, and the photos it runs now."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        name: str,
        heartbeat_s: float,
        lease_timeout_s: float,
    ) -> None:
        self.sessions = sessions
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.lease_timeout_s = lease_timeout_s
        self.worker_id: int = self._register()
        _LOCAL.add(self.worker_id)
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, name="trashmap-heartbeat")
        self._thread.daemon = True
        self._thread.start()
        logger.info("worker lease %s (%s, pid %s)", self.worker_id, name, os.getpid())

    def _register(self) -> int:
        with session_scope(self.sessions) as session:
            row = Worker(name=self.name[:255], host=socket.gethostname()[:255], pid=os.getpid())
            session.add(row)
            session.flush()
            return row.id

    def expires_at(self) -> datetime:
        """When a lease taken or renewed now runs out."""
        return utcnow() + timedelta(seconds=self.lease_timeout_s)

    def beat(self) -> None:
        """Renew the heartbeat and the leases of the photos this process runs now (a photo
        it stopped running, after an outage, is left to expire and be taken back)."""
        with self._lock:
            running = sorted(self._in_flight)
        with session_scope(self.sessions) as session:
            result = session.execute(
                update(Worker).where(Worker.id == self.worker_id).values(heartbeat_at=utcnow())
            )
            if running:
                session.execute(
                    update(Photo)
                    .where(
                        Photo.id.in_(running),
                        Photo.leased_by == self.worker_id,
                        Photo.status == PhotoStatus.processing.value,
                    )
                    .values(lease_expires_at=self.expires_at())
                    .execution_options(synchronize_session=False)
                )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                session.add(
                    Worker(
                        id=self.worker_id,
                        name=self.name[:255],
                        host=socket.gethostname()[:255],
                        pid=os.getpid(),
                    )
                )

    def _beat_loop(self) -> None:
        failing = False
        while not self._stopped.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as exc:  # the database restarting: keep trying, never stop
                if not failing:
                    logger.warning("worker lease %s: heartbeat failed (%s)", self.worker_id, exc)
                failing = True
                continue
            if failing:
                logger.info("worker lease %s: heartbeat renewed again", self.worker_id)
            failing = False

    def claim(self, photo_id: int) -> bool:
        """Mark a photo as run by this process now; False when it already is."""
        with self._lock:
            if photo_id in self._in_flight:
                return False
            self._in_flight.add(photo_id)
            return True

    def runs(self, photo_id: int) -> bool:
        with self._lock:
            return photo_id in self._in_flight

    def release(self, photo_id: int) -> None:
        with self._lock:
            self._in_flight.discard(photo_id)

    def close(self, remove: bool = True) -> None:
        """Stop the heartbeat and remove the row: a clean exit leaves no lease to wait out.

        `remove=False` leaves the row as a killed process would.
        """
        self._stopped.set()
        self._thread.join(timeout=5)
        _LOCAL.discard(self.worker_id)
        if not remove:
            return
        try:
            with session_scope(self.sessions) as session:
                session.execute(delete(Worker).where(Worker.id == self.worker_id))
        except Exception as exc:
            logger.warning("worker lease %s: not removed (%s)", self.worker_id, exc)
