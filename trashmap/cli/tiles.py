"""`trashmap tiles`: the tile store (migration 0011) that every web process serves from."""

from __future__ import annotations

import click

from trashmap.cli.preflight import Refused, migrated_settings, require_extra

# The tiles are the API's (web/query/tiles.py), so web's modules are needed.
TILE_MODULES = ("flask",)
DEFAULT_MAX_ZOOM = 10


@click.group()
def tiles() -> None:
    """Pre-render the map's vector tiles."""


@tiles.command("seed")
@click.option(
    "--max-zoom",
    type=click.IntRange(0),
    default=DEFAULT_MAX_ZOOM,
    show_default=True,
    help="Deepest zoom pre-rendered; deeper tiles are built on their first request.",
)
def seed(max_zoom: int) -> None:
    """Build every occupied unfiltered tile of zooms 0 to --max-zoom that the tile store
    lacks or holds stale, so that no visitor waits for one to be built.

    Tiles whose detections have not changed since they were stored are left as they are:
    running it again (e.g. from cron, after a large import) re-renders only what changed.
    """
    require_extra("web", *TILE_MODULES)
    from tqdm import tqdm

    from trashmap.db import make_engine, make_session_factory
    from web.query.features import is_postgis
    from web.query.filters import MapFilter
    from web.query.tiles import DETAIL_ZOOM, occupied_tiles, read_tile

    if max_zoom > DETAIL_ZOOM:  # deeper tiles are never stored: seeding them would be waste
        raise click.BadParameter(
            f"the tile store keeps zooms 0-{DETAIL_ZOOM}; deeper tiles are built per request",
            param_hint="--max-zoom",
        )

    sessions = make_session_factory(make_engine(migrated_settings()))
    flt = MapFilter()
    with sessions() as session:
        if not is_postgis(session):
            raise Refused(
                "the tile store needs PostgreSQL with PostGIS; this database is SQLite, "
                "which serves no vector tiles"
            )
        occupied = occupied_tiles(session, flt, range(max_zoom + 1))
        order = sorted((z, x, y) for z, cells in occupied.items() for x, y in cells)
        for z, x, y in tqdm(order, unit="tile", desc="tiles"):
            read_tile(session, flt, z, x, y, None)  # builds and stores unless current
    click.echo(f"{len(order)} tiles (zoom 0-{max_zoom}) are current in the tile store")
