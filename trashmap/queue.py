"""The detection task's contract (name, queue, payload) and the producer every sender uses.

The web app, `trashmap reprocess` and the reconciler send tasks by name through
`DetectionQueue`; only the worker imports the task's code.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from trashmap.settings import Settings

logger = logging.getLogger(__name__)

DETECT_TASK = "trashmap.detect_photo"


def detect_args(photo_id: int, model_version_id: int | None = None) -> list[int]:
    """The task's positional payload: the photo id, and a model version id when one is asked."""
    return [photo_id] if model_version_id is None else [photo_id, model_version_id]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the web (producer) and the workers (consumers)."""
    transport: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # An unacknowledged task is redelivered after this long; it must outlast the
        # longest task, or a slow photo would run twice.
        transport["visibility_timeout"] = (
            settings.visibility_timeout_s or settings.task_time_limit_s * 2 + 60
        )
        transport["socket_connect_timeout"] = 3
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": settings.queue_name,
        "task_routes": {DETECT_TASK: {"queue": settings.queue_name}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # the photo row is the truth, not a result backend
        "result_backend": None,
        "enable_utc": True,
    }


class DetectionQueue:
    """Sends detection tasks by name; `enqueue` never fails an upload over a broker outage."""

    def __init__(self, settings: Settings, name: str = "trashmap-producer") -> None:
        self.settings = settings
        self.celery = Celery(name, set_as_current=False)
        self.celery.conf.update(celery_config(settings))

    def send(self, photo_id: int, model_version_id: int | None = None, retries: int = 2) -> None:
        """Send one detection task; raises when the broker stays unreachable."""
        self.celery.send_task(
            DETECT_TASK,
            args=detect_args(photo_id, model_version_id),
            queue=self.settings.queue_name,
            retry=True,
            retry_policy={"max_retries": retries, "interval_start": 0.2, "interval_step": 0.5},
        )

    def enqueue(self, photo_id: int) -> bool:
        """Send one detection task; False (logged) when the broker is unreachable.

        The photo stays `queued` in the database, so the reconciler sends it again later.
        """
        try:
            self.send(photo_id)
        except Exception as exc:  # kombu raises many connection error types
            logger.warning("photo %s: broker unreachable, left queued (%s)", photo_id, exc)
            return False
        return True

    def backlog(self) -> int | None:
        """Messages waiting in the detection queue (not those workers hold); None when the
        broker cannot say."""
        from amqp.exceptions import ChannelError

        try:
            with self.celery.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
                try:
                    declared = conn.default_channel.queue_declare(
                        queue=self.settings.queue_name, passive=True
                    )
                except ChannelError:  # no such queue (Redis drops an empty one): nothing waits
                    return 0
                return int(declared.message_count)
        except Exception as exc:  # kombu raises many connection error types
            logger.info("broker backlog unknown: %s", exc)
            return None

    def ping(self) -> bool:
        """True when the broker accepts a connection."""
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
        except Exception as exc:
            logger.warning("broker unreachable: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.celery.close()
