"""Operator commands: model versions, reprocessing, the reconciler and the benchmark.

Only click is imported at module level; each command imports what it needs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click


def _settings():  # type: ignore[no-untyped-def]
    """The settings of these commands, which all read or write the database."""
    from trashmap.cli.preflight import migrated_settings

    return migrated_settings()


def _sessions(settings):  # type: ignore[no-untyped-def]
    from trashmap.db import make_engine, make_session_factory

    return make_session_factory(make_engine(settings))


# --- model versions ------------------------------------------------------------------------


@click.group()
def models() -> None:
    """Model versions: register checkpoints, choose the one workers run."""


@models.command("register")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--activate", "make_active", is_flag=True, help="Also make it the active version.")
def models_register(checkpoint: Path, make_active: bool) -> None:
    """Record CHECKPOINT (sha256, class names, its cross-validation metrics) as a version.

    Workers load it from this path: it must be readable at the same path on every worker
    machine (a shared or identical mount).
    """
    from trashmap.db import session_scope
    from trashmap.versions import VersionError, activate
    from worker.versions import register_checkpoint

    with session_scope(_sessions(_settings())) as session:
        try:
            row, created = register_checkpoint(session, checkpoint)
            if make_active:
                activate(session, row)
        except VersionError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"{'registered' if created else 'already registered'}: version {row.id} "
            f"({row.label}, {row.arch}, sha256 {(row.weights_sha256 or '')[:12]})"
            + (", active" if make_active else "")
        )


@models.command("activate")
@click.argument("version")
def models_activate(version: str) -> None:
    """Make VERSION (id, NAME:VERSION, or a unique version) the one workers run.

    Running workers switch between batches, within TRASHMAP_MODEL_CHECK_S seconds.
    """
    from trashmap.db import session_scope
    from trashmap.versions import VersionError, activate, find_version

    with session_scope(_sessions(_settings())) as session:
        try:
            row = find_version(session, version)
            activate(session, row)
        except VersionError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"active: version {row.id} ({row.label})")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(as_json: bool) -> None:
    """Every model version with its detections count and metrics."""
    from trashmap.versions import CHECKPOINT_KEY, detection_counts, list_versions

    with _sessions(_settings())() as session:
        rows, counts = list_versions(session), detection_counts(session)
        out = [
            {
                "id": r.id,
                "name": r.name,
                "version": r.version,
                "arch": r.arch,
                "active": r.active,
                "weights_sha256": r.weights_sha256,
                "checkpoint": (r.metrics or {}).get(CHECKPOINT_KEY),
                "classes": len(r.class_names),
                "detections": counts.get(r.id, 0),
                "metrics": {k: v for k, v in (r.metrics or {}).items() if k != CHECKPOINT_KEY},
            }
            for r in rows
        ]
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    for r in out:
        mark = "*" if r["active"] else " "
        click.echo(
            f"{mark} {r['id']:>4}  {r['name']}:{r['version']}  {r['arch']}  "
            f"{r['detections']} detections  {r['checkpoint'] or '(no checkpoint)'}"
        )


@models.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a PNG of each version's precision-recall curve (IoU 0.5).",
)
def models_compare(a: str, b: str, as_json: bool, plot: Path | None) -> None:
    """Score versions A and B (id, NAME:VERSION or a unique version) on the verified photos
    both ran on: COCO mAP, mAP50, per-class AP and detection counts."""
    from trashmap.scoring import ScoringError, compare, compare_json, format_table, plot_pr
    from trashmap.versions import VersionError, find_version

    with _sessions(_settings())() as session:
        try:
            result = compare(session, find_version(session, a), find_version(session, b))
        except (VersionError, ScoringError) as exc:
            raise click.ClickException(str(exc)) from None
        if plot is not None:
            plot_pr(result, str(plot))
        click.echo(json.dumps(compare_json(result), indent=2) if as_json else format_table(result))


# --- reprocessing and the reconciler -----------------------------------------------------------


def _bbox(_ctx: Any, _param: Any, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        west, south, east, north = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give WEST,SOUTH,EAST,NORTH in degrees") from None
    if not (-90 <= south <= north <= 90 and -180 <= west <= 180 and -180 <= east <= 180):
        raise click.BadParameter("latitudes within -90..90 (south <= north), longitudes -180..180")
    return west, south, east, north


@click.command()
@click.option(
    "--model",
    "model_ref",
    required=True,
    help="Version to run: id, NAME:VERSION or a unique version (see `models list`).",
)
@click.option("--since", type=click.DateTime(), help="Photos uploaded at or after (UTC).")
@click.option("--until", type=click.DateTime(), help="Photos uploaded before (UTC).")
@click.option("--bbox", callback=_bbox, help="Only photos inside WEST,SOUTH,EAST,NORTH.")
@click.option(
    "--verified",
    is_flag=True,
    help="Only photos a reviewer verified (to score the version: `models compare`).",
)
@click.option("--dry-run", is_flag=True, help="Count the photos; queue nothing.")
def reprocess(
    model_ref: str,
    since: datetime | None,
    until: datetime | None,
    bbox: tuple[float, float, float, float] | None,
    verified: bool,
    dry_run: bool,
) -> None:
    """Queue photos again for model version --model; other versions' detections stay.

    Each photo's own rows for that version are replaced; the photo then shows that
    version. Compare versions with GET /api/v1/detections?model_version=ID.
    """
    from tqdm import tqdm

    from trashmap.annotations import verified_term
    from trashmap.models import Photo
    from trashmap.queue import DetectionQueue
    from trashmap.versions import VersionError, find_version
    from worker.requeue import photo_query, requeue

    settings = _settings()
    sessions = _sessions(settings)
    since = since.replace(tzinfo=UTC) if since else None
    until = until.replace(tzinfo=UTC) if until else None
    with sessions() as session:
        try:
            version = find_version(session, model_ref)
        except VersionError as exc:
            raise click.ClickException(str(exc)) from None
        query = photo_query(since, until, bbox)
        if verified:
            query = query.where(verified_term(Photo.id))
        ids = list(session.scalars(query))
    if dry_run:
        click.echo(f"{len(ids)} photos would be queued for version {version.id} ({version.label})")
        return
    producer = DetectionQueue(settings)
    try:
        with tqdm(total=len(ids), unit="photo", desc="queueing") as bar:
            sent = requeue(sessions, producer, ids, version.id, progress=bar.update)
    finally:
        producer.close()
    click.echo(f"queued {sent} of {len(ids)} photos for version {version.id} ({version.label})")
    if sent < len(ids):
        raise click.ClickException("some photos could not be queued; the reconciler retries them")


@click.command()
@click.option(
    "--older-than",
    "older_than",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds a photo may stay queued (default: TRASHMAP_RECONCILE_AFTER_S).",
)
@click.option(
    "--processing-older-than",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds a photo may stay processing (default: the larger of --older-than "
    "and the broker's redelivery time, 2 x TRASHMAP_TASK_TIME_LIMIT + 120).",
)
@click.option("--limit", default=1000, show_default=True, help="Most photos per run.")
def reconcile(older_than: int | None, processing_older_than: int | None, limit: int) -> None:
    """Queue again photos stuck in queued/processing (a lost message loses no photo).

    Also folds pending grid-count deltas into the rollup (PostgreSQL). Workers run both
    every TRASHMAP_RECONCILE_INTERVAL_S; one acts at a time.
    """
    from trashmap import rollup
    from trashmap.queue import DetectionQueue
    from worker.reconcile import processing_limit_s
    from worker.reconcile import reconcile as run

    settings = _settings()
    queued_after = settings.reconcile_after_s if older_than is None else older_than
    processing_after = (
        processing_limit_s(settings, queued_after)
        if processing_older_than is None
        else processing_older_than
    )
    producer = DetectionQueue(settings)
    sessions = _sessions(settings)
    try:
        result = run(
            sessions,
            producer,
            queued_after,
            processing_after,
            limit,
            lease_timeout_s=settings.lease_timeout_s,
        )
    finally:
        producer.close()
    rollup.fold_quietly(sessions)
    if result.skipped:
        click.echo("another reconciler is running; nothing done")
        return
    click.echo(
        f"re-queued {result.sent} of {len(result.requeued)} stuck photos"
        + (f": {result.requeued[:20]}" if result.requeued else "")
    )


# --- benchmarks ----------------------------------------------------------------------------


@click.group()
def bench() -> None:
    """Benchmarks whose output the README quotes."""


@bench.command("infer")
@click.option(
    "--photos",
    "photo_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JPEGs to run (default: three 2-4 MB phone photos from tests/data/photos).",
)
@click.option("--count", default=12, show_default=True, help="Photos per path (cycling).")
@click.option(
    "--arch",
    default="fasterrcnn_mobilenet_v3_large_320_fpn",
    show_default=True,
    help="Architecture of the seeded random model both paths run.",
)
@click.option("--min-size", default=320, show_default=True, help="Model input short side.")
@click.option("--max-size", default=512, show_default=True, help="Model input long side.")
@click.option("--batch-size", default=8, show_default=True, help="Worker path batch size.")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    type=click.Choice(["fp32", "bf16", "fp16", "auto"]),
    help="Worker path precision.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_infer(
    photo_paths: tuple[Path, ...],
    count: int,
    arch: str,
    min_size: int,
    max_size: int,
    batch_size: int,
    device: str,
    precision: str,
    as_json: bool,
) -> None:
    """Photos/s of the worker's inference path against the tutorial's loop, side by side."""
    bench_module = _load_bench("infer_bench")
    config = bench_module.BenchConfig(
        photos=list(photo_paths),
        count=count,
        arch=arch,
        min_size=min_size,
        max_size=max_size,
        batch_size=batch_size,
        device=device,
        precision=precision,
    )
    result = bench_module.run_bench(config, progress=not as_json)
    click.echo(json.dumps(result, indent=2) if as_json else bench_module.format_table(result))


def _load_bench(name: str) -> Any:
    """A script under bench/ of the source checkout (it is not an installed package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"trashmap_bench_{name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise click.ClickException(f"{path} not found: benchmarks run from a source checkout")
    import sys

    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def register(cli: click.Group) -> None:
    """Attach these commands to the `trashmap` group."""
    for command in (models, reprocess, reconcile, bench):
        cli.add_command(command)
