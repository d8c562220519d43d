"""`trashmap keys create|list|revoke`: staff API keys, stored hashed in the database."""

from __future__ import annotations

import click

SCOPE_HELP = (
    "read:stats (GET /api/v1/stats, /api/v1/models/compare), export (GET /api/v1/exports/*), "
    "write (staff changes such as DELETE /api/v1/photos/<id>), "
    "review (the /review page: GET /api/v1/review/queue, PUT /api/v1/photos/<id>/annotations)"
)


def _sessions():  # type: ignore[no-untyped-def]
    from trashmap.cli.preflight import migrated_settings
    from trashmap.db import make_engine, make_session_factory

    return make_session_factory(make_engine(migrated_settings()))


@click.group()
def keys() -> None:
    """Staff API keys: create, list and revoke (the database of TRASHMAP_DATABASE_URL).

    Staff endpoints want `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    """


@keys.command("create")
@click.option("--name", required=True, help="Who or what uses the key, e.g. 'ngo-dashboard'.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help=f"Repeat for several. One of: {SCOPE_HELP}.",
)
def create(name: str, scopes: tuple[str, ...]) -> None:
    """Make a key and print it once: only its hash is stored, it cannot be shown again."""
    from trashmap.apikeys import ApiKeyError, create_key
    from trashmap.db import session_scope

    try:
        with session_scope(_sessions()) as session:
            key, token = create_key(session, name, scopes)
            session.flush()
            key_id, prefix = key.id, key.prefix
    except ApiKeyError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"created key {key_id} ({prefix}) for {name!r}, scopes {', '.join(sorted(scopes))}")
    click.echo(token)


@keys.command("list")
def list_() -> None:
    """Print every key: id, prefix, name, scopes, created, last used, revoked."""
    from trashmap.apikeys import list_keys
    from trashmap.db import session_scope

    with session_scope(_sessions()) as session:
        rows = list_keys(session)
        if not rows:
            click.echo("no API keys; make one with `trashmap keys create`")
        for key in rows:
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            used = f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never"
            click.echo(
                f"{key.id}\t{key.prefix}\t{key.name}\t{','.join(key.scopes)}\t"
                f"created {key.created_at:%Y-%m-%d %H:%M}\tlast used {used}\t{state}"
            )


@keys.command("revoke")
@click.argument("key")
def revoke(key: str) -> None:
    """Revoke KEY (its id or prefix); requests with it get 401 from then on."""
    from trashmap.apikeys import ApiKeyError, revoke_key
    from trashmap.db import session_scope

    try:
        with session_scope(_sessions()) as session:
            row = revoke_key(session, key)
            click.echo(f"revoked key {row.id} ({row.prefix}) {row.name!r}")
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
