"""Thin Celery tasks: ids in, retries for outages, failures recorded on the photo."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError

from trashmap.queue import DETECT_TASK
from worker import pipeline
from worker.runtime import InferenceTimeoutError, Runtime, get_runtime

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
def detect_photo(self, photo_id: int, model_version_id: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """Detect trash in photo `photo_id` (with the active model, or `model_version_id`)."""
    runtime = get_runtime()
    try:
        outcome = pipeline.detect_photo(
            runtime.sessions,
            runtime.decode,
            runtime.infer,
            photo_id,
            model_version_id,
            max_attempts=runtime.settings.max_attempts,
        )
    except TRANSIENT:
        logger.warning("photo %s: transient error, retry %d", photo_id, self.request.retries + 1)
        raise
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise OperationalError(exc.statement, exc.params, exc.orig or exc) from exc
        _fail(runtime, photo_id, exc)
        raise
    except (SoftTimeLimitExceeded, InferenceTimeoutError) as exc:
        pipeline.record_failure(
            runtime.sessions, photo_id, f"timed out: the photo took too long ({exc})", "timeout"
        )
        raise
    except Exception as exc:
        # A bug, a model that will not load, an out-of-memory: record it, never swallow it.
        _fail(runtime, photo_id, exc)
        raise
    return outcome.status


def _fail(runtime: Runtime, photo_id: int, exc: Exception) -> None:
    reason = f"internal error: {type(exc).__name__}: {exc}"
    logger.exception("photo %s: %s", photo_id, reason)
    pipeline.record_failure(runtime.sessions, photo_id, reason, type(exc).__name__)
