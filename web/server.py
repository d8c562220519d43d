"""Serve the Flask app with gunicorn (the production WSGI server) from the CLI."""

from __future__ import annotations

import gc
from typing import Any

from gunicorn.app.base import BaseApplication

from trashmap.settings import Settings
from web import create_app


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured in code, so `trashmap web` needs no config file."""

    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        app = create_app(self.settings)
        # What lives as long as the worker (modules, the app, its engine) leaves the
        # collector's view: a full collection, which a 1000-feature page can trigger,
        # then takes microseconds instead of ~60 ms.
        gc.freeze()
        return app


def _metrics_dir(settings: Settings) -> None:
    """Share Prometheus values between gunicorn processes (set before any of them starts)."""
    import os
    import shutil

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    folder = settings.data_dir.resolve() / "prometheus-web"
    shutil.rmtree(folder, ignore_errors=True)  # values of a previous run must not add up
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(
    settings: Settings, host: str, port: int, workers: int, threads: int, access_log: bool = True
) -> None:
    """Run gunicorn in the foreground until it is stopped."""
    _metrics_dir(settings)
    GunicornServer(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 60,
            "graceful_timeout": 20,
            "accesslog": "-" if access_log else None,
            "loglevel": settings.log_level.lower(),
            # Each gunicorn worker builds its own app (and engine) after forking.
            "preload_app": False,
            "child_exit": _child_exit,
        },
    ).run()
