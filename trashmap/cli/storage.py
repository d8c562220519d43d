"""`trashmap storage gc|check|migrate`: the photo objects of TRASHMAP_STORAGE_URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import sqlalchemy as sa

    from trashmap.storage import Storage


def _open(url: str | None = None) -> tuple[sa.Engine, Storage, str]:
    """The migrated database's engine, the storage (`url`, else the configured one), its URL."""
    from trashmap.cli.preflight import Refused, migrated_settings
    from trashmap.db import make_engine
    from trashmap.storage import open_storage_url, storage_url

    settings = migrated_settings()
    where = url or storage_url(settings)
    try:
        storage = open_storage_url(where, settings.s3_endpoint_url)
    except (ValueError, ModuleNotFoundError) as exc:
        raise Refused(str(exc)) from None
    return make_engine(settings), storage, where


def _unavailable(exc: Exception) -> click.ClickException:
    from trashmap.cli.preflight import Refused

    return Refused(f"storage unavailable: {exc}")


@click.group()
def storage() -> None:
    """Photo objects in TRASHMAP_STORAGE_URL (file:///path or s3://bucket/prefix)."""


@storage.command("gc")
@click.option(
    "--older-than",
    "older_than_s",
    default=3600,
    show_default=True,
    help="Seconds: younger objects are kept (their upload may still be committing).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def gc(older_than_s: int, dry_run: bool) -> None:
    """Remove objects no photo row points to (a crashed upload's, a deleted photo's)."""
    from trashmap.storage import StorageUnavailable, collect_garbage

    engine, store, where = _open()
    try:
        report = collect_garbage(store, engine, older_than_s=older_than_s, dry_run=dry_run)
    except StorageUnavailable as exc:
        raise _unavailable(exc) from None
    removed = report.removed or []
    for key in removed:
        click.echo(f"{'would remove' if dry_run else 'removed'} {key}")
    click.echo(
        f"{where}: {report.examined} objects examined, {len(removed)} without a photo "
        f"{'to remove' if dry_run else 'removed'}, {report.kept_recent} recent ones kept"
    )


@storage.command("check")
@click.option("--verify", is_flag=True, help="Read every object and compare its sha256 too.")
def check(verify: bool) -> None:
    """Exit 1 unless every photo row has its object (and, with --verify, intact bytes)."""
    from trashmap.storage import StorageUnavailable, check_objects

    engine, store, where = _open()
    problems = 0
    rows = 0
    try:
        for _, problem in check_objects(store, engine, verify=verify):
            rows += 1
            if problem is not None:
                problems += 1
                click.echo(f"photo {problem.photo_id}: {problem.problem} ({problem.sha256})")
    except StorageUnavailable as exc:
        raise _unavailable(exc) from None
    click.echo(f"{where}: {rows} photos, {problems} without usable bytes")
    if problems:
        raise SystemExit(1)


@storage.command("migrate")
@click.option(
    "--to",
    "to_url",
    default=None,
    help="Target storage URL (default: TRASHMAP_STORAGE_URL, else file://<data dir>/storage).",
)
@click.option(
    "--from",
    "from_url",
    default=None,
    help="Also copy every photo's objects from this other storage URL.",
)
def migrate(to_url: str | None, from_url: str | None) -> None:
    """Copy the database's photo blobs (and --from's objects) to storage, verified.

    Resumable: run it again after an interruption and it goes on where it stopped (an
    object already in the target with the right sha256 is not copied again). Each blob
    leaves the database once its copy is verified; the emptied table is then dropped.
    Point TRASHMAP_STORAGE_URL at the target afterwards when it is not already.
    """
    from trashmap.storage import (
        StorageError,
        migrate_one,
        open_storage_url,
        pending_moves,
        retire_blob_table,
    )

    engine, target, where = _open(to_url)
    source = None
    if from_url:
        from trashmap.cli.preflight import Refused

        try:
            source = open_storage_url(from_url, _endpoint())
        except (ValueError, ModuleNotFoundError) as exc:
            raise Refused(str(exc)) from None
    todo = pending_moves(source, target, engine)
    counts: dict[str, int] = {}
    failed: list[str] = []
    with click.progressbar(todo, label=f"to {where}", show_pos=True) as bar:
        for item in bar:
            try:
                done = migrate_one(item, source, target, engine)
            except StorageError as exc:
                failed.append(f"{item}: {exc}")
                continue
            counts[done] = counts.get(done, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing to do"
    click.echo(f"{where}: {summary}")
    for line in failed:
        click.echo(f"failed: {line}", err=True)
    with engine.begin() as conn:
        left = retire_blob_table(conn)
    if left:
        click.echo(f"photo_blobs keeps {left} rows: run `trashmap storage migrate` again")
    elif counts or not todo:
        click.echo("no photo bytes left in the database (the photo_blobs table is gone)")
    if failed:
        raise SystemExit(1)


def _endpoint() -> str:
    from trashmap.cli.preflight import load_settings

    return load_settings().s3_endpoint_url
