"""Detection of one photo as plain functions: load, decode, infer, write (no Celery here)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import Image
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from trashmap import rollup
from trashmap.db import session_scope
from trashmap.imaging import ImageError
from trashmap.models import Detection, Photo, PhotoStatus, utcnow
from trashmap.storage import PhotoBytesMissing, get_photo_bytes
from worker import metrics
from worker.batching import Inference

if TYPE_CHECKING:
    import torch

    from ml.detector import Detection as Found

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    photo_id: int
    status: str
    detections: int = 0
    reason: str | None = None


class GaveUp(Exception):
    """The photo was started too often without finishing: it kills or hangs its worker."""


def start(sessions: sessionmaker[Session], photo_id: int, max_attempts: int) -> Photo | None:
    """Mark the photo processing (committed) and return it; None if it no longer exists.

    `attempts` counts starts since the last finished run. A photo that takes its worker
    down (a decoder crash, the OOM killer) is redelivered again and again; past
    `max_attempts` it is failed instead, so it cannot stall the queue forever.
    """
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
        if photo is None:
            return None
        if (photo.attempts or 0) >= max_attempts:
            raise GaveUp(
                f"gave up after {photo.attempts} attempts: the worker stopped while processing "
                "this photo each time (crash or out of memory)"
            )
        photo.status = PhotoStatus.processing.value
        photo.attempts = (photo.attempts or 0) + 1
        session.flush()
        session.expunge(photo)
        return photo


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
) -> None:
    """Replace this photo's detections for this model version and mark it done, atomically."""
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
        if photo is None:
            return
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
        photo.model_version_id = model_version_id
        photo.processed_at = utcnow()


def mark_failed(sessions: sessionmaker[Session], photo_id: int, reason: str) -> None:
    """Record why the photo cannot be processed; its earlier detections stay."""
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id)
        if photo is not None:
            photo.status = PhotoStatus.failed.value
            photo.error = reason[:2000]


class Decoder(Protocol):
    def __call__(self, data: bytes) -> tuple[Image.Image | torch.Tensor, float]: ...


class Infer(Protocol):
    def __call__(
        self, photo_id: int, image: Image.Image | torch.Tensor, model_version_id: int | None
    ) -> Inference: ...


def detect_photo(
    sessions: sessionmaker[Session],
    decode: Decoder,
    infer: Infer,
    photo_id: int,
    model_version_id: int | None = None,
    max_attempts: int = 3,
) -> Outcome:
    """Run the detector on one stored photo and store what it found.

    `decode` turns bytes into an upright image and the factor back to full-size pixels;
    `infer` blocks until the photo's batch has run. Image problems are permanent (the photo
    is marked failed); database errors propagate so the caller can retry.
    """
    try:
        photo = start(sessions, photo_id, max_attempts)
    except GaveUp as exc:
        logger.error("photo %s: %s", photo_id, exc)
        record_failure(sessions, photo_id, str(exc), "gave_up")
        return Outcome(photo_id, "failed", reason=str(exc))
    if photo is None:
        logger.warning("photo %s: gone before detection; nothing to do", photo_id)
        metrics.PHOTOS.labels("missing").inc()
        return Outcome(photo_id, "missing")
    t0 = time.perf_counter()
    try:
        with session_scope(sessions) as session:
            data = get_photo_bytes(session, photo_id)
        t1 = time.perf_counter()
        image, factor = decode(data)
    except (ImageError, PhotoBytesMissing) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("photo %s: failed permanently: %s", photo_id, reason)
        record_failure(sessions, photo_id, reason, type(exc).__name__)
        return Outcome(photo_id, "failed", reason=reason)
    t2 = time.perf_counter()
    result = infer(photo_id, image, model_version_id)
    t3 = time.perf_counter()
    boxes = scaled_boxes(result.found, factor, photo.width, photo.height)
    write_detections(sessions, photo_id, result.model_version_id, boxes)
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


def record_failure(sessions: sessionmaker[Session], photo_id: int, reason: str, kind: str) -> None:
    """Mark the photo failed and count it under `kind` (an error class name)."""
    mark_failed(sessions, photo_id, reason)
    metrics.PHOTOS.labels("failed").inc()
    metrics.FAILURES.labels(kind).inc()
