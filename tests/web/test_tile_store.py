"""The tile store (migration 0011): a process without a tile serves the stored one only
while its detections are unchanged, and `trashmap tiles seed` fills it."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import settings_env
from tests.web.test_tiles import _add_detection, _decode, tile_of
from trashmap.cli import cli
from trashmap.db import session_scope
from web.query.tiles import store_key


def _stored(pg_sessions, z: int, x: int, y: int) -> bytes | None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        data = session.scalar(
            sa.text("SELECT data FROM tile_store WHERE key = :key"), {"key": store_key(z, x, y)}
        )
    return None if data is None else bytes(data)


def test_a_process_serves_the_stored_tile_only_while_it_is_current(  # type: ignore[no-untyped-def]
    app, client, pg_sessions, seeded
) -> None:
    anchor = next(d for d in seeded.detections if d.photo.lat is not None)
    z = 6
    x, y = tile_of(anchor.photo.lat, anchor.photo.lon, z)
    url = f"/api/v1/tiles/{z}/{x}/{y}.mvt"

    def fresh_process() -> bytes:
        app.extensions.pop("tile_cache", None)  # what another gunicorn process has
        response = client.get(url)
        assert response.status_code == 200
        return bytes(response.data)

    first = fresh_process()
    assert _stored(pg_sessions, z, x, y) == first  # the build was stored
    with session_scope(pg_sessions) as session:  # marked, to see the next read is the store's
        session.execute(
            sa.text("UPDATE tile_store SET data = data || '\\x00'::bytea WHERE key = :key"),
            {"key": store_key(z, x, y)},
        )
    assert fresh_process() == first + b"\x00"
    total = sum(f["properties"]["count"] for f in _decode(first))
    _add_detection(pg_sessions, anchor.photo.id, anchor.photo.lat, anchor.photo.lon)
    rebuilt = fresh_process()  # the stored tile is stale: built again, and stored
    assert sum(f["properties"]["count"] for f in _decode(rebuilt)) == total + 1
    assert _stored(pg_sessions, z, x, y) == rebuilt
    # Filtered tiles are never stored (the process cache keeps them).
    assert client.get(url, query_string={"label": "Drink can"}).status_code == 200
    with session_scope(pg_sessions) as session:
        assert (
            session.scalar(sa.text("SELECT count(*) FROM tile_store WHERE z = :z"), {"z": z}) == 1
        )


def test_seed_stores_every_occupied_tile_up_to_max_zoom(  # type: ignore[no-untyped-def]
    app, client, pg_settings, pg_sessions, seeded
) -> None:
    result = CliRunner().invoke(
        cli, ["tiles", "seed", "--max-zoom", "3"], env=settings_env(pg_settings)
    )
    assert result.exit_code == 0, result.output
    with session_scope(pg_sessions) as session:
        seeded_at = session.scalar(sa.text("SELECT max(built_at) FROM tile_store"))
    anchor = next(d for d in seeded.detections if d.photo.lat is not None)
    for z in range(4):
        x, y = tile_of(anchor.photo.lat, anchor.photo.lon, z)
        stored = _stored(pg_sessions, z, x, y)
        assert stored, (z, x, y)
        app.extensions.pop("tile_cache", None)
        assert client.get(f"/api/v1/tiles/{z}/{x}/{y}.mvt").data == stored
    assert _stored(pg_sessions, 4, *tile_of(anchor.photo.lat, anchor.photo.lon, 4)) is None
    again = CliRunner().invoke(
        cli, ["tiles", "seed", "--max-zoom", "3"], env=settings_env(pg_settings)
    )
    assert again.exit_code == 0 and "are current" in again.output
    with session_scope(pg_sessions) as session:  # nothing changed: nothing was rebuilt
        rebuilt = session.scalar(
            sa.text("SELECT count(*) FROM tile_store WHERE built_at > :t"), {"t": seeded_at}
        )
    assert rebuilt == 0


def test_a_store_that_refuses_the_write_still_serves_the_tile(  # type: ignore[no-untyped-def]
    app, client, pg_engine, seeded, caplog
) -> None:
    anchor = next(d for d in seeded.detections if d.photo.lat is not None)
    x, y = tile_of(anchor.photo.lat, anchor.photo.lon, 5)
    with pg_engine.begin() as conn:  # as a read-only replica or a full disk would
        conn.execute(
            sa.text(
                "CREATE FUNCTION refuse_tile() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'tile store refuses writes'; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse BEFORE INSERT ON tile_store "
                "FOR EACH ROW EXECUTE FUNCTION refuse_tile()"
            )
        )
    try:
        response = client.get(f"/api/v1/tiles/5/{x}/{y}.mvt")
        assert response.status_code == 200 and _decode(bytes(response.data))
        assert "not stored" in caplog.text
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refuse ON tile_store"))
            conn.execute(sa.text("DROP FUNCTION refuse_tile()"))
