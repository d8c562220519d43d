"""A Celery worker that stops on an unrecoverable error is reported, so `trashmap worker`
starts a fresh process instead of leaving photos waiting (a real worker, in-process)."""

from __future__ import annotations

from pathlib import Path

from celery import bootsteps

from tests.conftest import embedded_settings
from worker.celery_app import create_celery, run_worker


class _Broken(bootsteps.StartStopStep):
    """Raises as kombu's Redis transport can while the broker goes away."""

    def start(self, parent: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'hostname'")


def _argv(queue: str) -> list[str]:
    return ["worker", "--pool=solo", "--without-gossip", "--without-mingle", "-Q", queue]


def test_an_unrecoverable_error_is_reported_for_a_restart(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    app = create_celery(settings)
    app.steps["worker"].add(_Broken)
    assert run_worker(app, _argv(settings.queue_name)) is True
