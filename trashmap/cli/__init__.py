"""The `trashmap` command: one entry point for the service, the workers, the database and ml/.

Heavy modules (torch, Flask, Celery) are imported inside each command, so `trashmap web`
never loads torch and `trashmap --help` answers at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from trashmap.cli.preflight import (
    Refused,
    load_settings,
    migrated_settings,
    require_device,
    require_extra,
    require_migrated,
)

logger = logging.getLogger("trashmap")
# `trashmap up` gives its children this long to stop on their own, then kills them.
STOP_GRACE_S = 8.0
WEB_MODULES = ("flask", "flask_limiter", "gunicorn")
WORKER_MODULES = ("torch", "torchvision")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """trashmap: crowdsourced photos of litter -> detections -> a debris map.

    Settings come from TRASHMAP_* environment variables (see .env.example). With none
    set, everything runs embedded: SQLite files under ./var and no server to install.
    """


# --- the service -----------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, help="TCP port of the web app.")
@click.option("--untrained", is_flag=True, help="Run a random detector when no weights are set.")
@click.option(
    "--demo",
    "demo_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Upload every photo in this folder once the service is up, and print the results.",
)
@click.option("--exit-after-demo", is_flag=True, help="Stop the service after the demo.")
@click.option("--demo-timeout", default=900, show_default=True, help="Seconds to wait for results.")
def up(
    host: str,
    port: int,
    untrained: bool,
    demo_dir: Path | None,
    exit_after_demo: bool,
    demo_timeout: int,
) -> None:
    """Run everything on one machine: migrate, one detection worker and the web app.

    The embedded default keeps the database and the queue in SQLite files under ./var
    (TRASHMAP_DATA_DIR). Ctrl-C or SIGTERM stops it and everything it started.
    """
    from trashmap import migrate

    require_extra("web", *WEB_MODULES)
    require_extra("worker", *WORKER_MODULES)
    settings = load_settings()
    _configure_logging(settings.log_level)
    migrate.upgrade(settings)
    env = dict(os.environ, TRASHMAP_DATA_DIR=str(settings.data_dir))
    worker_cmd = [sys.executable, "-m", "trashmap", "worker"]
    worker_cmd += ["--untrained"] if untrained else []
    web_cmd = [
        sys.executable,
        "-m",
        "trashmap",
        "web",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
    ]
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    # Each child leads its own process group, so stopping it reaches gunicorn's and
    # Celery's own children too, and a terminal's Ctrl-C reaches only this process.
    children = [
        subprocess.Popen(cmd, env=env, start_new_session=True) for cmd in (worker_cmd, web_cmd)
    ]
    base_url = f"http://{host}:{port}"
    try:
        _wait_for_http(f"{base_url}/healthz", children, timeout_s=120)
        database = settings.describe()["database_url"]
        click.echo(f"trashmap is up at {base_url} (database: {database})")
        if demo_dir is not None:
            _run_demo(base_url, demo_dir, demo_timeout)
            if exit_after_demo:
                return
        while all(child.poll() is None for child in children):
            time.sleep(1)
        raise click.ClickException("a trashmap process stopped; see the log above")
    except (KeyboardInterrupt, _Stopped):
        click.echo("stopping")
    finally:
        # A second signal must not cut the stop short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(children)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)


class _Stopped(Exception):
    """SIGTERM arrived: `trashmap up` stops its children and exits."""


def _raise_stopped(_signum: int, _frame: FrameType | None) -> None:
    raise _Stopped()


def _wait_for_http(url: str, children: list[subprocess.Popen], timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise click.ClickException("a trashmap process exited during start-up")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise click.ClickException(f"{url} did not become healthy within {timeout_s:.0f} s")


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM each child's process group, wait STOP_GRACE_S, then SIGKILL what is left."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning(
                "process %s did not stop within %.0f s; killing it", child.pid, STOP_GRACE_S
            )
        # Also whatever the child left running in its group (a gunicorn or Celery worker).
        _signal_group(child, signal.SIGKILL)
        child.wait()


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    # ProcessLookupError: the group is empty, everything in it has exited.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def _run_demo(base_url: str, folder: Path, timeout_s: float) -> None:
    from trashmap.cli.client import describe, upload, wait_until_processed

    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    paths = [
        p for p in paths if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp")
    ]
    click.echo(f"uploading {len(paths)} photos from {folder}")
    results = [upload(base_url, path) for path in paths]
    deadline = time.monotonic() + timeout_s
    for result in results:
        if "id" in result.body:
            remaining = max(1.0, deadline - time.monotonic())
            result.final = wait_until_processed(base_url, result.body["id"], remaining)
        click.echo(describe(result))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, help="TCP port.")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, help="Threads per gunicorn worker.")
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="Log every request to stdout.",
)
def web(host: str, port: int, workers: int, threads: int, access_log: bool) -> None:
    """Serve the web app and API with gunicorn (no torch is loaded here)."""
    require_extra("web", *WEB_MODULES)
    from web.server import serve

    settings = migrated_settings()
    _configure_logging(settings.log_level)
    serve(settings, host, port, workers, threads, access_log)


@cli.command()
@click.option(
    "--untrained",
    is_flag=True,
    help="With no active model version and no TRASHMAP_WEIGHTS, run a RANDOM "
    "detector (demos and tests only).",
)
@click.option(
    "--device",
    default=None,
    help="Torch device, e.g. cpu, cuda, cuda:1 (default: TRASHMAP_DEVICE or auto).",
)
@click.option(
    "--pin",
    is_flag=True,
    help="Stay on TRASHMAP_WEIGHTS instead of following the active model version.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Photos per micro-batch (default: TRASHMAP_BATCH_SIZE).",
)
@click.option(
    "--batch-wait-ms",
    type=click.IntRange(min=0),
    default=None,
    help="Longest wait for a batch to fill (default: TRASHMAP_BATCH_WAIT_MS).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0),
    default=None,
    help="Serve Prometheus metrics on this port (default: TRASHMAP_METRICS_PORT).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks in flight: threads pool 2 x batch size (one batch decodes while the "
    "other runs); prefork: processes, each with its own model (1 per GPU).",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="threads: one model, micro-batches; prefork: a crashing photo kills only a "
    "child; solo: one photo at a time in one process.",
)
@click.option("--hostname", default=None, help="Celery node name (default: trashmap@HOST).")
def worker(
    untrained: bool,
    device: str | None,
    pin: bool,
    batch_size: int | None,
    batch_wait_ms: int | None,
    metrics_port: int | None,
    concurrency: int | None,
    pool: str,
    hostname: str | None,
) -> None:
    """Run a detection worker: takes photos off the queue and stores what it finds.

    Runs the active model version (`trashmap models activate`) and switches between batches
    when another is activated. TRASHMAP_WEIGHTS is registered at start and activated when no
    version is active; with --pin the worker stays on it. One worker per GPU (--device).
    """
    from dataclasses import replace

    require_extra("worker", *WORKER_MODULES)
    settings = load_settings()
    overrides: dict[str, Any] = {
        "device": device,
        "batch_size": batch_size,
        "batch_wait_ms": batch_wait_ms,
        "metrics_port": metrics_port,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.weights is not None and not settings.weights.is_file():
        raise Refused(f"TRASHMAP_WEIGHTS={settings.weights} does not exist")
    if pin and settings.weights is None:
        raise Refused("--pin needs TRASHMAP_WEIGHTS, the checkpoint to stay on")
    require_device(settings.device)
    require_migrated(settings)
    if settings.weights is None and not untrained:
        from trashmap.versions import any_active

        if not any_active(settings):
            raise Refused(
                "no detector: no model version is active. Register and activate a checkpoint "
                "(`trashmap models register CHECKPOINT --activate`, a file written by "
                "`trashmap ml train`; see README 'Getting weights'), set TRASHMAP_WEIGHTS, or "
                "pass --untrained to run a random, meaningless detector for demos and tests."
            )
    _configure_logging(settings.log_level)
    os.environ["TRASHMAP_UNTRAINED"] = "1" if untrained else "0"
    os.environ["TRASHMAP_PIN_WEIGHTS"] = "1" if pin else "0"
    if concurrency is None:
        concurrency = 2 * settings.batch_size if pool == "threads" else 1
    from worker.celery_app import RESTART_DELAY_S, create_celery, restart_process, run_worker

    app = create_celery(settings)
    app.conf.worker_pool = pool  # read by the runtime to load the model in the right process
    argv = [
        "worker",
        f"--loglevel={settings.log_level}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        "-Q",
        settings.queue_name,
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    if run_worker(app, argv):
        # A fresh process, not a second worker_main: Celery's state after such an error is
        # not reusable. Same pid, so a supervisor or `trashmap up` keeps tracking it.
        logger.error(
            "the worker stopped on an unrecoverable error; restarting in %d s", RESTART_DELAY_S
        )
        restart_process()


# --- the database ----------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema migrations (Alembic, under migrations/)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from trashmap import migrate

    settings = load_settings()
    _configure_logging(settings.log_level)
    migrate.upgrade(settings, revision)
    click.echo(f"database at {revision}: {settings.describe()['database_url']}")


@db.command("check")
def db_check() -> None:
    """Fail when the models and the migrations disagree (alembic check)."""
    from trashmap import migrate

    migrate.check(migrated_settings())
    click.echo("no schema drift")


@db.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from trashmap import migrate

    settings = load_settings()
    if not migrate.database_exists(settings):
        raise Refused(
            f"no database at {settings.describe()['database_url']}: run `trashmap db upgrade`"
        )
    migrate.current(settings)


# --- clients -----------------------------------------------------------------------------


@cli.command("upload")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Service URL.")
@click.option("--lat", type=float, help="Latitude to use when a photo has no GPS.")
@click.option("--lon", type=float, help="Longitude to use when a photo has no GPS.")
@click.option(
    "--wait",
    "wait_s",
    default=0,
    show_default=True,
    help="Seconds to wait for detections (0: do not wait).",
)
def upload_cmd(
    files: tuple[Path, ...], url: str, lat: float | None, lon: float | None, wait_s: int
) -> None:
    """Upload photos to a running service and print what came back."""
    from trashmap.cli.client import describe, upload, wait_until_processed

    fields = {"lat": str(lat), "lon": str(lon)} if lat is not None and lon is not None else {}
    for path in files:
        result = upload(url.rstrip("/"), path, fields)
        if wait_s and "id" in result.body:
            result.final = wait_until_processed(url.rstrip("/"), result.body["id"], wait_s)
        click.echo(describe(result))


# What the `ml` extra brings that its commands import.
ML_MODULES = ("torch", "torchvision", "sklearn", "pycocotools", "scipy")


def _register_command_modules() -> None:
    """Attach commands defined in other modules (each imports only click at module level)."""
    from ml.cli import bench_slicing, ml
    from trashmap.cli.dataset import dataset
    from trashmap.cli.export import export
    from trashmap.cli.keys import keys
    from trashmap.cli.operations import bench
    from trashmap.cli.operations import register as register_operations
    from trashmap.cli.storage import storage
    from trashmap.cli.tiles import tiles

    _needs_extra(ml, "ml", *ML_MODULES)
    _needs_extra(bench_slicing, "ml", *ML_MODULES)
    bench.add_command(bench_slicing)
    cli.add_command(ml)
    cli.add_command(keys)
    cli.add_command(dataset)
    cli.add_command(storage)
    cli.add_command(export)
    cli.add_command(tiles)
    register_operations(cli)


def _needs_extra(group: click.Command, extra: str, *modules: str) -> None:
    """Check for `extra` before the command (a group: any of its commands) runs; --help needs
    nothing."""
    callback = group.callback

    def checked(*args: object, **kwargs: object) -> object:
        require_extra(extra, *modules)
        return callback(*args, **kwargs) if callback else None

    group.callback = checked


_register_command_modules()


def main() -> None:
    cli(prog_name="trashmap")
