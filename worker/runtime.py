"""Per-process worker state: database engine and detector, created after Celery forks."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import current_app
from celery.signals import worker_process_init, worker_ready
from sqlalchemy.orm import Session, sessionmaker

from web.db import make_engine, make_session_factory, session_scope
from web.models import ModelVersion
from web.settings import Settings

if TYPE_CHECKING:
    from ml.detector import Detector

logger = logging.getLogger(__name__)

UNTRAINED_ENV = "TRASHMAP_UNTRAINED"


@dataclass
class Runtime:
    """Everything a detection task needs, owned by one worker process."""

    settings: Settings
    sessions: sessionmaker[Session]
    detector: Detector
    model_version_id: int


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def load_detector(settings: Settings, untrained: bool) -> Detector:
    """The checkpoint named by TRASHMAP_WEIGHTS, or a random one when asked for explicitly."""
    from ml.detector import Detector  # torch is imported here, in the worker child only

    if settings.weights is not None:
        return Detector.from_checkpoint(
            settings.weights, settings.device, min_size=settings.min_size, max_size=settings.max_size
        )
    if not untrained:
        raise RuntimeError("no detector weights: set TRASHMAP_WEIGHTS or pass --untrained")
    detector = Detector.untrained(
        [f"class_{i}" for i in range(1, settings.untrained_classes + 1)],
        settings.untrained_arch,
        settings.device if settings.device != "auto" else "cpu",
        min_size=settings.min_size or 800,
        max_size=settings.max_size or 1333,
    )
    logger.warning(
        "RUNNING AN UNTRAINED DETECTOR (%s): its detections are random and mean nothing",
        settings.untrained_arch,
    )
    return detector


def register_model_version(sessions: sessionmaker[Session], detector: Detector) -> int:
    """The model_versions row for this detector, created on first use."""
    info = detector.info
    with session_scope(sessions) as session:
        row = session.query(ModelVersion).filter_by(name=info.name, version=info.version).first()
        if row is None:
            row = ModelVersion(
                name=info.name,
                version=info.version,
                arch=info.arch,
                weights_sha256=detector.weights_sha256,
                class_names=list(info.class_names),
                metrics=info.metrics or None,
            )
            session.add(row)
            session.flush()
        return row.id


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (after any fork, never at import)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings: Settings = current_app.conf.trashmap_settings
        engine = make_engine(settings)
        sessions = make_session_factory(engine)
        detector = load_detector(settings, untrained=os.environ.get(UNTRAINED_ENV) == "1")
        version_id = register_model_version(sessions, detector)
        _runtime, _runtime_pid = Runtime(settings, sessions, detector, version_id), os.getpid()
        logger.info(
            "worker pid %s ready: model %s:%s on %s",
            os.getpid(),
            detector.info.name,
            detector.info.version,
            detector.device,
        )
    return _runtime


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    # A prefork child: load the model now so the first photo does not pay for it.
    get_runtime()


@worker_ready.connect
def _load_in_solo(sender: Any = None, **_: Any) -> None:
    # The solo and threads pools run tasks in the main process, which has no fork signal.
    conf = getattr(getattr(sender, "app", None), "conf", None)
    if conf is not None and str(conf.get("worker_pool", "prefork")) in ("solo", "threads"):
        get_runtime()

