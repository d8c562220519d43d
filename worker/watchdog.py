"""The batch watchdog: a worker whose inference is stuck past any photo's deadline restarts.

A task thread gives up on its photo at the deadline (`Batcher.infer`), but the batch thread
itself cannot be stopped: a model call hung in native code (a CUDA driver, a BLAS kernel)
holds it forever, every later photo waits behind it and fails, and the heartbeat keeps the
process looking alive. Celery's hard time limit only covers the prefork pool. So a thread
here looks at when the running batch began; past `limit_s` it dumps every thread's stack
(the operator's clue) and starts the process afresh, which ends the stuck thread with it.
The photos it held lose their lease and are re-queued by the reconciler. (A native call that
never releases the GIL stops this thread too; the heartbeat then stops with it, so the
leases expire and the photos move to another worker all the same.)
"""

from __future__ import annotations

import faulthandler
import logging
import sys
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# A batch older than this many task time limits cannot be serving anyone: each of its
# photos was given up on after one.
WEDGED_AFTER_TIME_LIMITS = 2


class Watchdog:
    """Calls `on_wedged` once when `busy_since()` (a time.monotonic() or None) is older than
    `limit_s`."""

    def __init__(
        self,
        busy_since: Callable[[], float | None],
        limit_s: float,
        on_wedged: Callable[[float], None],
        interval_s: float = 1.0,
    ) -> None:
        self.busy_since = busy_since
        self.limit_s = limit_s
        self.on_wedged = on_wedged
        self.interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="trashmap-watchdog", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopped.wait(self.interval_s):
            since = self.busy_since()
            if since is None:
                continue
            stuck_s = time.monotonic() - since
            if stuck_s > self.limit_s:
                self.on_wedged(stuck_s)
                return

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)


def restart_wedged(restart: Callable[[], None]) -> Callable[[float], None]:
    """The usual `on_wedged`: log, dump the threads' stacks to stderr, then `restart()`."""

    def wedged(stuck_s: float) -> None:
        logger.critical(
            "inference has been stuck in one batch for %.0f s (over %d x TRASHMAP_TASK_TIME_LIMIT);"
            " restarting the worker process; stacks follow on stderr",
            stuck_s,
            WEDGED_AFTER_TIME_LIMITS,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        restart()

    return wedged
