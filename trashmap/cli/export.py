"""`trashmap export`: the detections as files a static site can serve (PMTiles archives)."""

from __future__ import annotations

import gzip
from datetime import datetime
from pathlib import Path

import click

from trashmap.cli.preflight import Refused, migrated_settings, require_extra

# The archive's tiles are the API's (web/query/tiles.py), so web's modules are needed.
EXPORT_MODULES = ("flask", "pmtiles")
DEFAULT_MAX_ZOOM = 14  # the first zoom with one point per detection (DETAIL_ZOOM)


@click.group()
def export() -> None:
    """Write the detections to files for static hosting."""


@export.command("pmtiles")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The .pmtiles archive to write (replaced if it exists).",
)
@click.option(
    "--max-zoom",
    type=click.IntRange(0, 24),
    default=DEFAULT_MAX_ZOOM,
    show_default=True,
    help="Deepest zoom level written; map viewers enlarge its tiles beyond it.",
)
@click.option("--label", "labels", multiple=True, help="Only this label (repeatable).")
@click.option("--supercategory", help="Only this kind of litter, e.g. Bottle.")
@click.option("--min-score", type=click.FloatRange(0, 1), help="Only detections scoring this.")
@click.option(
    "--since", type=click.DateTime(["%Y-%m-%d"]), help="Photos taken on or after this day."
)
@click.option(
    "--until", type=click.DateTime(["%Y-%m-%d"]), help="Photos taken up to this day, inclusive."
)
@click.option("--model-version", help="Only this model version (ID or name:version).")
@click.option("--bbox", help="Only inside WEST,SOUTH,EAST,NORTH (degrees).")
def export_pmtiles(
    out: Path,
    max_zoom: int,
    labels: tuple[str, ...],
    supercategory: str | None,
    min_score: float | None,
    since: datetime | None,
    until: datetime | None,
    model_version: str | None,
    bbox: str | None,
) -> None:
    """Write the detections as one PMTiles archive of vector tiles, zooms 0 to --max-zoom.

    The tiles are those of GET /api/v1/tiles (layer `detections`: clusters with a count
    below zoom 14, one point per detection from it), gzip-compressed. PostgreSQL with
    PostGIS only. The filters mean what the API's query parameters of the same name mean.
    """
    require_extra("web", *EXPORT_MODULES)
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import write
    from tqdm import tqdm
    from werkzeug.datastructures import MultiDict

    from trashmap.db import make_engine, make_session_factory
    from web.errors import ApiError
    from web.query.features import is_postgis
    from web.query.filters import MapFilter
    from web.query.tiles import (
        CLUSTER_FIELDS,
        DETAIL_FIELDS,
        DETAIL_ZOOM,
        LAYER,
        occupied_tiles,
        tile_bytes,
    )

    args: MultiDict[str, str] = MultiDict([("label", label) for label in labels])
    options = {
        "supercategory": supercategory,
        "min_score": None if min_score is None else str(min_score),
        "since": since.date().isoformat() if since else None,
        "until": until.date().isoformat() if until else None,
        "model_version": model_version,
        "bbox": bbox,
    }
    for name, value in options.items():
        if value is not None:
            args.add(name, value)
    try:
        flt = MapFilter.from_args(args)
    except ApiError as exc:
        raise click.UsageError(exc.message) from None

    sessions = make_session_factory(make_engine(migrated_settings()))
    with sessions() as session:
        if not is_postgis(session):
            raise Refused(
                "PMTiles export needs vector tiles, which need PostgreSQL with PostGIS; "
                "this database is SQLite (use GET /api/v1/detections or `trashmap` exports)"
            )
        zooms = range(max_zoom + 1)
        tiles = occupied_tiles(session, flt, zooms)
        if not tiles[0]:
            raise Refused("no positioned detections match the filters: nothing to export")
        order = sorted(
            (zxy_to_tileid(z, x, y), z, x, y) for z, cells in tiles.items() for x, y in cells
        )
        written = 0
        with write(str(out)) as writer:
            for tile_id, z, x, y in tqdm(order, unit="tile", desc="tiles"):
                data = tile_bytes(session, flt, z, x, y)
                if data:  # a buffer-only neighbour may hold nothing once clipped
                    writer.write_tile(tile_id, gzip.compress(data, mtime=0))
                    written += 1
            west, south, east, north = _bounds(tiles[max_zoom], max_zoom)
            header = {
                "tile_type": TileType.MVT,
                "tile_compression": Compression.GZIP,
                "min_lon_e7": int(west * 1e7),
                "min_lat_e7": int(south * 1e7),
                "max_lon_e7": int(east * 1e7),
                "max_lat_e7": int(north * 1e7),
                "center_zoom": 0,
            }
            metadata = {
                "name": "trashmap detections",
                "description": "Litter detections: clusters with a count below zoom "
                f"{DETAIL_ZOOM}, one point per detection from it.",
                "vector_layers": [
                    {
                        "id": LAYER,
                        "fields": {**CLUSTER_FIELDS, **DETAIL_FIELDS},
                        "minzoom": 0,
                        "maxzoom": max_zoom,
                    }
                ],
                "trashmap": {"detail_zoom": DETAIL_ZOOM, "filters": {**options, "label": labels}},
            }
            writer.finalize(header, metadata)
    click.echo(f"wrote {written} tiles (zoom 0-{max_zoom}) to {out}")


def _bounds(cells: set[tuple[int, int]], z: int) -> tuple[float, float, float, float]:
    """West, south, east, north of the tiles `cells` at zoom z, in degrees."""
    from web.query.tiles import tile_box

    boxes = [tile_box(z, x, y) for x, y in cells]
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
