"""Detection of one photo as plain functions: load, decode, detect, write (no Celery here)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from web.db import session_scope
from web.imaging import ImageError, decode_oriented
from web.models import Detection, Photo, PhotoStatus, utcnow
from web.storage import PhotoBytesMissing, get_photo_bytes

if TYPE_CHECKING:
    from ml.detector import Detection as Found
    from ml.detector import Detector

logger = logging.getLogger(__name__)


class PermanentError(Exception):
    """Retrying cannot help (the photo itself is the problem): mark it failed."""


@dataclass(frozen=True)
class Outcome:
    photo_id: int
    status: str
    detections: int = 0
    reason: str | None = None


def start(sessions: sessionmaker[Session], photo_id: int) -> Photo | None:
    """Mark the photo processing (committed) and return it; None if it no longer exists."""
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id, with_for_update=_row_lock(session))
        if photo is None:
            return None
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
        photo.model_version_id = model_version_id
        photo.processed_at = utcnow()


def mark_failed(sessions: sessionmaker[Session], photo_id: int, reason: str) -> None:
    """Record why the photo cannot be processed; its earlier detections stay."""
    with session_scope(sessions) as session:
        photo = session.get(Photo, photo_id)
        if photo is not None:
            photo.status = PhotoStatus.failed.value
            photo.error = reason[:2000]


def detect_photo(
    sessions: sessionmaker[Session],
    detector: Detector,
    model_version_id: int,
    photo_id: int,
    score_threshold: float,
    max_detections: int,
) -> Outcome:
    """Run the detector on one stored photo and store what it found.

    Image problems are permanent (the photo is marked failed); database errors propagate
    so the caller can retry.
    """
    photo = start(sessions, photo_id)
    if photo is None:
        logger.warning("photo %s: gone before detection; nothing to do", photo_id)
        return Outcome(photo_id, "missing")
    t0 = time.perf_counter()
    try:
        with session_scope(sessions) as session:
            data = get_photo_bytes(session, photo_id)
        image, factor = decode_oriented(data, target=detector.input_size)
    except (ImageError, PhotoBytesMissing) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("photo %s: failed permanently: %s", photo_id, reason)
        mark_failed(sessions, photo_id, reason)
        return Outcome(photo_id, "failed", reason=reason)
    t1 = time.perf_counter()
    found = detector.predict([image], score_threshold, max_detections)[0]
    t2 = time.perf_counter()
    boxes = scaled_boxes(found, factor, photo.width, photo.height)
    write_detections(sessions, photo_id, model_version_id, boxes)
    logger.info(
        "photo %s: %d detections (decode %.0f ms, detect %.0f ms, write %.0f ms)",
        photo_id,
        len(boxes),
        (t1 - t0) * 1000,
        (t2 - t1) * 1000,
        (time.perf_counter() - t2) * 1000,
    )
    return Outcome(photo_id, "done", detections=len(boxes))
