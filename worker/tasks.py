"""Thin Celery tasks: ids in, retries for outages, failures recorded on the photo."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError

from web.queue import DETECT_TASK
from worker import pipeline
from worker.runtime import Runtime, get_runtime

logger = logging.getLogger(__name__)

# Database and broker outages are worth waiting for; anything else is not.
TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


@shared_task(
    name=DETECT_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=20,
    ignore_result=True,
)
def detect_photo(self, photo_id: int) -> str:  # type: ignore[no-untyped-def]
    """Detect trash in photo `photo_id` and store the boxes with its position."""
    runtime = get_runtime()
    try:
        outcome = pipeline.detect_photo(
            runtime.sessions,
            runtime.detector,
            runtime.model_version_id,
            photo_id,
            runtime.settings.score_threshold,
            runtime.settings.max_detections,
        )
    except TRANSIENT:
        logger.warning("photo %s: transient error, retry %d", photo_id, self.request.retries + 1)
        raise
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise OperationalError(exc.statement, exc.params, exc.orig) from exc
        _fail(runtime, photo_id, exc)
        raise
    except SoftTimeLimitExceeded:
        pipeline.mark_failed(runtime.sessions, photo_id, "timed out: the photo took too long")
        raise
    except Exception as exc:
        # A bug or an out-of-memory on this photo: record it, never swallow it.
        _fail(runtime, photo_id, exc)
        raise
    return outcome.status


def _fail(runtime: Runtime, photo_id: int, exc: Exception) -> None:
    reason = f"internal error: {type(exc).__name__}: {exc}"
    logger.exception("photo %s: %s", photo_id, reason)
    pipeline.mark_failed(runtime.sessions, photo_id, reason)
