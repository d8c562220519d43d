"""Per-process worker state: database engine, model loader and batcher, created after fork."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import current_app
from celery.signals import worker_process_init, worker_ready, worker_shutdown
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import make_engine, make_session_factory
from trashmap.settings import Settings
from worker import metrics
from worker.batching import Batcher, Inference
from worker.leases import Membership
from worker.loader import ModelLoader, describe_slicing
from worker.watchdog import WEDGED_AFTER_TIME_LIMITS, Watchdog, restart_wedged

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

UNTRAINED_ENV = "TRASHMAP_UNTRAINED"
PIN_ENV = "TRASHMAP_PIN_WEIGHTS"


@dataclass
class Runtime:
    """Everything a detection task needs, owned by one worker process."""

    settings: Settings
    sessions: sessionmaker[Session]
    loader: ModelLoader
    batcher: Batcher
    membership: Membership

    def decode(
        self, data: bytes, version_id: int | None = None
    ) -> tuple[Image.Image | torch.Tensor, float]:
        """Upright image at the smallest size its model can use, and the factor back."""
        return self.loader.decode(data, version_id)

    def infer(
        self,
        photo_id: int,
        image: Image.Image | torch.Tensor,
        model_version_id: int | None,
        timeout_s: float,
    ) -> Inference:
        """This process's batcher runs the photo (see Batcher.infer)."""
        return self.batcher.infer(photo_id, image, model_version_id, timeout_s)

    watchdog: Watchdog | None = None

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.close()
        self.batcher.close()
        self.membership.close()


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def build_runtime(settings: Settings, *, untrained: bool, pinned: bool) -> Runtime:
    """Engine, model and batcher for this process; raises loader.NoModelError without a model."""
    sessions = make_session_factory(make_engine(settings))
    loader = ModelLoader(settings, sessions, untrained=untrained, pinned=pinned)
    model = loader.start()
    batcher = Batcher(
        loader.resolve,
        settings.batch_size,
        settings.batch_wait_ms / 1000,
        settings.max_detections,
        after_batch=lambda: _gpu_memory(loader),
    )
    logger.info(
        "worker pid %s ready: model %s (version %s) on %s, batches of up to %d, slicing %s",
        os.getpid(),
        model.label,
        model.version_id,
        loader.device,
        settings.batch_size,
        describe_slicing(model),
    )
    membership = Membership(
        sessions,
        f"{socket.gethostname()}:{os.getpid()}",
        settings.heartbeat_s,
        settings.lease_timeout_s,
    )
    return Runtime(settings, sessions, loader, batcher, membership)


def watch_batches(runtime: Runtime) -> None:
    """Restart this process if a batch never ends (worker/watchdog.py). Only where the
    batcher lives in the process `trashmap worker` started: a prefork child is killed and
    replaced by Celery's own hard time limit."""
    from worker.celery_app import restart_process

    limit_s = WEDGED_AFTER_TIME_LIMITS * runtime.settings.task_time_limit_s
    runtime.watchdog = Watchdog(
        lambda: runtime.batcher.busy_since, limit_s, restart_wedged(restart_process)
    )


def _gpu_memory(loader: ModelLoader) -> None:
    if loader.current is not None and loader.device.startswith("cuda"):
        read = loader.current.predictor.memory  # type: ignore[attr-defined]
        metrics.watch_gpu_memory(loader.device, read)


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after any fork, never at import)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings: Settings = current_app.conf.trashmap_settings
        _runtime = build_runtime(
            settings,
            untrained=os.environ.get(UNTRAINED_ENV) == "1",
            pinned=os.environ.get(PIN_ENV) == "1",
        )
        _runtime_pid = os.getpid()
        metrics.serve(settings.metrics_port)
    return _runtime


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    # A prefork child: load the model now so the first photo does not pay for it.
    get_runtime()


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    conf = getattr(getattr(sender, "app", None), "conf", None)
    if conf is None:
        return
    # The solo and threads pools run tasks in the main process, which has no fork signal.
    if str(conf.get("worker_pool", "prefork")) in ("solo", "threads"):
        watch_batches(get_runtime())
    from worker.reconcile import start_periodic

    start_periodic(conf.trashmap_settings)


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    from worker.reconcile import stop_periodic

    stop_periodic()
    if _runtime is not None and _runtime_pid == os.getpid():
        _runtime.close()
