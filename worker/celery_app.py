"""The detection workers' Celery app, configured from Settings."""

from __future__ import annotations

from celery import Celery

from trashmap.queue import celery_config
from trashmap.settings import Settings


def create_celery(settings: Settings) -> Celery:
    """A Celery app whose workers consume the detection queue.

    acks_late + reject_on_worker_lost: a task is acknowledged only after it finished, so a
    worker killed mid-photo hands the photo back to the broker; prefetch 1 keeps one
    worker from hoarding photos another could start on.
    """
    app = Celery("trashmap", set_as_current=True)
    app.conf.update(celery_config(settings))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(5, settings.task_time_limit_s - 30),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        # A prefork child loads the model before it reports up; the default 4 s would have
        # the parent kill every child that loads a big checkpoint and fork it again, forever.
        worker_proc_alive_timeout=300,
        imports=("worker.tasks",),
    )
    app.conf.trashmap_settings = settings
    import worker.runtime  # noqa: F401  (connects the per-process signal handlers)

    return app
