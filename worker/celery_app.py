"""The detection workers' Celery app, configured from Settings."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from celery import Celery

from trashmap.queue import celery_config
from trashmap.settings import Settings

# Pause before a worker process starts itself afresh (a broker going away comes back).
RESTART_DELAY_S = 3


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


class _UnrecoverableErrorWatch(logging.Handler):
    """Notes Celery's "Unrecoverable error" record: the worker stops itself after it."""

    def __init__(self) -> None:
        super().__init__(logging.CRITICAL)
        self.seen = False

    def emit(self, record: logging.LogRecord) -> None:
        self.seen = self.seen or record.getMessage().startswith("Unrecoverable error")


def run_worker(app: Celery, argv: Sequence[str]) -> bool:
    """Run the Celery worker until it stops; True when it stopped on an unrecoverable error.

    Such an error is not a request to stop: kombu's Redis transport can raise one while the
    broker is going away (restoring unacknowledged messages on a closed connection), and the
    worker would stay down with photos waiting. The caller starts a fresh process then.
    """
    watch = _UnrecoverableErrorWatch()
    celery_logger = logging.getLogger("celery.worker")
    celery_logger.addHandler(watch)
    try:
        app.worker_main(list(argv))
    finally:
        celery_logger.removeHandler(watch)
    return watch.seen


def restart_process() -> NoReturn:
    """Replace this process by a fresh `trashmap worker` with the same arguments.

    Same pid, so a supervisor or `trashmap up` keeps tracking it; every thread ends,
    including one stuck in native code. Only for the process `trashmap worker` started
    (the solo and threads pools), never a prefork child.
    """
    time.sleep(RESTART_DELAY_S)
    logging.shutdown()  # flush what was logged before the image is replaced
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-m", "trashmap", *sys.argv[1:]])
    except OSError as exc:  # logging is shut down: say it on stderr, exit for the supervisor
        print(f"trashmap worker: cannot restart itself ({exc}); exiting", file=sys.stderr)
        os._exit(1)
