"""Detection of one photo as plain functions: load, decode, infer, write (no Celery here)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from PIL import Image
from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from trashmap import rollup
from trashmap.db import session_scope
from trashmap.imaging import ImageError
from trashmap.models import Detection, Photo, PhotoStatus, utcnow
from trashmap.storage import PhotoBytesMissing, default_storage, get_photo_bytes
from worker import metrics
from worker.batching import DeadlineExceeded, Inference
from worker.leases import Membership, lease_held, worker_alive

if TYPE_CHECKING:
    import torch

    from ml.detector import Detection as Found

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    photo_id: int
    status: str
    detections: int = 0
    reason: str | None = None


class GaveUp(Exception):
    """The photo's worker died too often while running it: it kills or hangs its worker."""


class Busy(Exception):
    """Another living run holds the photo (a duplicate delivery): leave it to that run."""


class Settled(Exception):
    """The photo is done or failed already: a late duplicate of a message that was run."""


# Database and broker outages are worth waiting for (the task retries); anything else is not.
TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """An outage, not a fault of the photo: a lost connection or a timeout reaching a server."""
    if isinstance(exc, DeadlineExceeded):
        return False
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def start(
    sessions: sessionmaker[Session],
    photo_id: int,
    max_attempts: int,
    membership: Membership,
    model_version_id: int | None = None,
) -> Photo | None:
    """Lease the photo to this process and mark it processing (committed); None if gone.

    `attempts` counts runs whose worker died (found here, or by the reconciler when it takes
    a dead worker's photos back), never retries after an outage: a photo that keeps killing
    its worker is failed once `max_attempts` is reached, so it cannot stall the queue.
    Raises Busy when a living run holds the photo, GaveUp past `max_attempts`, Settled
    when a message for the active model finds the photo finished (every sender marks a
    photo queued before it sends; only a duplicate finds it done).
    """
    if not membership.claim(photo_id):
        raise Busy(f"photo {photo_id} is already running in this process")
    try:
        with session_scope(sessions) as session:
            photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
            if photo is None:
                membership.release(photo_id)
                return None
            if model_version_id is None and photo.status in _SETTLED:
                raise Settled(f"photo {photo_id} is {photo.status} already")
            attempts = photo.attempts or 0
            if photo.status == PhotoStatus.processing.value and photo.leased_by != (
                membership.worker_id
            ):
                if lease_held(session, photo, membership.lease_timeout_s):
                    raise Busy(f"photo {photo_id} is running on worker {photo.leased_by}")
                if not worker_alive(session, photo.leased_by, membership.lease_timeout_s):
                    attempts += 1  # its worker died while running it
            # (Leased by this process but not running here: a retry after an outage.)
            if attempts >= max_attempts:
                raise GaveUp(
                    f"gave up after {attempts} attempts: the worker stopped while processing "
                    "this photo each time (crash or out of memory)"
                )
            photo.status = PhotoStatus.processing.value
            photo.attempts = attempts
            photo.leased_by = membership.worker_id
            photo.lease_expires_at = membership.expires_at()
            photo.lease_token = (photo.lease_token or 0) + 1
            session.flush()
            session.expunge(photo)
            return photo
    except BaseException:
        membership.release(photo_id)
        raise


_SETTLED = (PhotoStatus.done.value, PhotoStatus.failed.value)


def _row_lock(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def scaled_boxes(
    found: list[Found], factor: float, width: int, height: int
) -> list[tuple[str, float, tuple[float, float, float, float]]]:
    """Boxes from the decoded image's pixels to the full oriented photo's, clipped to it."""
    out = []
    for det in found:
        x1, y1, x2, y2 = (v * factor for v in det.box)
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        out.append((det.label, det.score, (x1, y1, x2, y2)))
    return out


def write_detections(
    sessions: sessionmaker[Session],
    photo_id: int,
    model_version_id: int,
    boxes: list[tuple[str, float, tuple[float, float, float, float]]],
    lease_token: int,
) -> bool:
    """Replace this photo's detections for this model version and mark it done, atomically.

    False (nothing written) when the run no longer holds the photo's lease: the reconciler
    took it back, and another run has it or has finished it.
    """
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
        if photo is None or not _holds(photo, lease_token):
            return False
        session.execute(
            delete(Detection).where(
                Detection.photo_id == photo_id, Detection.model_version_id == model_version_id
            )
        )
        session.add_all(
            Detection(
                photo_id=photo_id,
                model_version_id=model_version_id,
                label=label,
                score=score,
                x1=box[0],
                y1=box[1],
                x2=box[2],
                y2=box[3],
                lat=photo.lat,
                lon=photo.lon,
            )
            for label, score, box in boxes
        )
        photo.status = PhotoStatus.done.value
        photo.error = None
        photo.attempts = 0
        photo.leased_by = None
        photo.model_version_id = model_version_id
        photo.processed_at = utcnow()
        return True


def _holds(photo: Photo, lease_token: int | None) -> bool:
    return lease_token is None or (
        photo.status == PhotoStatus.processing.value and photo.lease_token == lease_token
    )


def mark_failed(
    sessions: sessionmaker[Session], photo_id: int, reason: str, lease_token: int | None = None
) -> bool:
    """Record why the photo cannot be processed; its earlier detections stay.

    With `lease_token`, only while that run still holds the photo (see write_detections).
    """
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
        if photo is None or not _holds(photo, lease_token):
            return False
        photo.status = PhotoStatus.failed.value
        photo.error = reason[:2000]
        photo.leased_by = None
        return True


class Decoder(Protocol):
    def __call__(self, data: bytes) -> tuple[Image.Image | torch.Tensor, float]: ...


class Infer(Protocol):
    def __call__(
        self,
        photo_id: int,
        image: Image.Image | torch.Tensor,
        model_version_id: int | None,
        timeout_s: float,
    ) -> Inference: ...


def detect_photo(
    sessions: sessionmaker[Session],
    decode: Decoder,
    infer: Infer,
    photo_id: int,
    model_version_id: int | None = None,
    *,
    membership: Membership,
    max_attempts: int = 3,
    time_limit_s: float = 600.0,
    timeouts: tuple[type[BaseException], ...] = (),
) -> Outcome:
    """Run the detector on one stored photo and store what it found.

    `decode` turns bytes into an upright image and the factor back to full-size pixels;
    `infer` blocks until the photo's batch has run. The photo has `time_limit_s` from its
    start (decode, the wait for its batch, the batch itself), whatever runs the task, and
    `timeouts` names the caller's own deadline errors. Image problems, deadlines and bugs
    fail the photo with a reason; outages (`is_transient`) propagate so the caller retries.
    """
    try:
        photo = start(sessions, photo_id, max_attempts, membership, model_version_id)
    except (Busy, Settled) as exc:
        logger.info("photo %s: skipped, %s", photo_id, exc)
        return Outcome(photo_id, "skipped")
    except GaveUp as exc:
        logger.error("photo %s: %s", photo_id, exc)
        record_failure(sessions, photo_id, str(exc), "gave_up")
        return Outcome(photo_id, "failed", reason=str(exc))
    if photo is None:
        logger.warning("photo %s: gone before detection; nothing to do", photo_id)
        metrics.PHOTOS.labels("missing").inc()
        return Outcome(photo_id, "missing")
    try:
        return _run(
            sessions, decode, infer, photo, model_version_id, time.monotonic() + time_limit_s
        )
    except Exception as exc:
        if is_transient(exc):
            raise
        if isinstance(exc, (DeadlineExceeded, *timeouts)):
            reason, kind = f"timed out: the photo took too long ({exc})", "timeout"
            logger.warning("photo %s: %s", photo_id, reason)
        elif isinstance(exc, (ImageError, PhotoBytesMissing)):
            reason, kind = f"{type(exc).__name__}: {exc}", type(exc).__name__
            logger.warning("photo %s: failed permanently: %s", photo_id, reason)
        else:
            # A bug, a model that will not load, an out-of-memory: record it, never swallow it.
            reason, kind = f"internal error: {type(exc).__name__}: {exc}", type(exc).__name__
            logger.exception("photo %s: %s", photo_id, reason)
        if not record_failure(sessions, photo_id, reason, kind, photo.lease_token):
            return Outcome(photo_id, "superseded")
        return Outcome(photo_id, "failed", reason=reason)
    finally:
        membership.release(photo_id)


def _run(
    sessions: sessionmaker[Session],
    decode: Decoder,
    infer: Infer,
    photo: Photo,
    model_version_id: int | None,
    deadline: float,
) -> Outcome:
    photo_id = photo.id
    t0 = time.perf_counter()
    with session_scope(sessions) as session:
        # Storage outages retry (StorageUnavailable is a ConnectionError); a missing or
        # corrupted object (PhotoBytesMissing, PhotoCorrupted) fails the photo.
        data = get_photo_bytes(session, photo_id, default_storage())
    t1 = time.perf_counter()
    image, factor = within(deadline, "decoding", decode, data)
    t2 = time.perf_counter()
    result = infer(photo_id, image, model_version_id, _left(deadline, "waiting for the model"))
    t3 = time.perf_counter()
    boxes = scaled_boxes(result.found, factor, photo.width, photo.height)
    if not write_detections(sessions, photo_id, result.model_version_id, boxes, photo.lease_token):
        logger.warning(
            "photo %s: result dropped: the lease was taken back while it ran (another run "
            "stores it)",
            photo_id,
        )
        metrics.PHOTOS.labels("superseded").inc()
        return Outcome(photo_id, "superseded")
    rollup.fold_quietly(sessions)
    t4 = time.perf_counter()
    for stage, seconds in (
        ("load", t1 - t0),
        ("decode", t2 - t1),
        ("wait", max(0.0, t3 - t2 - result.batch_seconds)),
        ("inference", result.batch_seconds),
        ("write", t4 - t3),
    ):
        metrics.observe_stage(stage, seconds)
    metrics.PHOTOS.labels("done").inc()
    metrics.DETECTIONS.inc(len(boxes))
    logger.info(
        "photo %s: %d detections (version %s, decode %.0f ms, batch of %d %.0f ms, write %.0f ms)",
        photo_id,
        len(boxes),
        result.model_version_id,
        (t2 - t1) * 1000,
        result.batch_size,
        result.batch_seconds * 1000,
        (t4 - t3) * 1000,
    )
    return Outcome(photo_id, "done", detections=len(boxes))


def _left(deadline: float, doing: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"no time left before {doing} (TRASHMAP_TASK_TIME_LIMIT)")
    return left


def within(deadline: float, doing: str, fn: Callable[[bytes], T], arg: bytes) -> T:
    """fn(arg) on a helper thread, given up on at the deadline (a thread cannot be killed:
    a decoder that hangs keeps its thread, but the photo is failed and the task goes on)."""
    future: Future[T] = Future()

    def call() -> None:
        try:
            future.set_result(fn(arg))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=call, name="trashmap-decode", daemon=True).start()
    try:
        return future.result(timeout=_left(deadline, doing))
    except FutureTimeout:
        raise DeadlineExceeded(
            f"{doing} did not finish within the time limit (TRASHMAP_TASK_TIME_LIMIT)"
        ) from None


def record_failure(
    sessions: sessionmaker[Session],
    photo_id: int,
    reason: str,
    kind: str,
    lease_token: int | None = None,
) -> bool:
    """Mark the photo failed and count it under `kind` (an error class name); False when
    the run's lease was taken back (the photo belongs to another run now)."""
    if not mark_failed(sessions, photo_id, reason, lease_token):
        return False
    metrics.PHOTOS.labels("failed").inc()
    metrics.FAILURES.labels(kind).inc()
    return True
