"""Thin Celery tasks: ids in, retries for outages, failures recorded on the photo."""

from __future__ import annotations

import functools
import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from trashmap.queue import DETECT_TASK
from worker import pipeline
from worker.runtime import get_runtime

logger = logging.getLogger(__name__)


@shared_task(
    name=DETECT_TASK,
    bind=True,
    acks_late=True,
    autoretry_for=pipeline.TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=20,
    ignore_result=True,
)
def detect_photo(self, photo_id: int, model_version_id: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """Detect trash in photo `photo_id` (with the active model, or `model_version_id`).

    The pipeline records every failure on the photo itself; only outages come out of it,
    and those are retried (a retry does not count as one of the photo's attempts).
    """
    runtime = get_runtime()
    try:
        outcome = pipeline.detect_photo(
            runtime.sessions,
            functools.partial(runtime.decode, version_id=model_version_id),
            runtime.infer,
            photo_id,
            model_version_id,
            membership=runtime.membership,
            max_attempts=runtime.settings.max_attempts,
            time_limit_s=runtime.settings.task_time_limit_s,
            timeouts=(SoftTimeLimitExceeded,),
        )
    except Exception as exc:
        if not pipeline.is_transient(exc):
            logger.exception("photo %s: detection task failed", photo_id)
            raise
        logger.warning(
            "photo %s: transient error (%s: %s), retry %d",
            photo_id,
            type(exc).__name__,
            exc,
            self.request.retries + 1,
        )
        if not isinstance(exc, pipeline.TRANSIENT):  # a dropped connection (DBAPIError)
            raise OperationalError(None, None, exc) from exc
        raise
    return outcome.status
