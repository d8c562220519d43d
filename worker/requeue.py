"""Sending photos to the detection queue again: reprocessing and the reconciler share this."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import session_scope
from trashmap.models import Photo, PhotoStatus, utcnow
from trashmap.queue import DetectionQueue

logger = logging.getLogger(__name__)

CHUNK = 500


def photo_query(
    since: datetime | None = None,
    until: datetime | None = None,
    bbox: tuple[float, float, float, float] | None = None,
) -> Select[int]:
    """Ids of photos uploaded in [since, until) and inside bbox (west, south, east, north)."""
    query = select(Photo.id).order_by(Photo.id)
    if since is not None:
        query = query.where(Photo.created_at >= since)
    if until is not None:
        query = query.where(Photo.created_at < until)
    if bbox is not None:
        west, south, east, north = bbox
        query = query.where(Photo.lat.between(south, north))
        if west <= east:
            query = query.where(Photo.lon.between(west, east))
        else:  # the box crosses the antimeridian
            query = query.where((Photo.lon >= west) | (Photo.lon <= east))
    return query


def requeue(
    sessions: sessionmaker[Session],
    producer: DetectionQueue,
    photo_ids: Iterable[int],
    model_version_id: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Mark photos queued (committed first) and send them; returns how many were sent.

    A send that fails leaves its photo queued, so the reconciler sends it later.
    """
    sent = 0
    for chunk in _chunks(photo_ids, CHUNK):
        with session_scope(sessions) as session:
            session.execute(
                update(Photo)
                .where(Photo.id.in_(chunk))
                # An operator's explicit request starts the crash count afresh.
                .values(
                    status=PhotoStatus.queued.value, error=None, attempts=0, updated_at=utcnow()
                )
            )
        for photo_id in chunk:
            try:
                producer.send(photo_id, model_version_id)
            except Exception as exc:  # kombu raises many connection error types
                logger.warning("photo %s: could not be queued (%s); left queued", photo_id, exc)
                continue
            sent += 1
        if progress is not None:
            progress(len(chunk))
    return sent


def _chunks(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for photo_id in ids:
        chunk.append(photo_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
