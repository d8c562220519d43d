"""Vector tiles of detections (PostGIS ST_AsMVT): the SQL the tile API and the PMTiles export share.

Below DETAIL_ZOOM a tile holds clusters (one point per CLUSTER_PX square, with its count);
from DETAIL_ZOOM on, one point per detection. Both sit in the layer `detections`.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from trashmap.models import Detection, Photo
from web.query.filters import MapFilter, box_term

LAYER = "detections"
EXTENT = 4096
BUFFER = 64
DETAIL_ZOOM = 14
CLUSTER_PX = 64  # in tile units: 64 x 64 clusters per tile at most
MAX_ZOOM = 24
# What each kind of feature carries, for a tile set's `vector_layers` metadata.
CLUSTER_FIELDS = {"count": "Number", "max_score": "Number", "label": "String"}
DETAIL_FIELDS = {"id": "Number", "photo_id": "Number", "label": "String", "score": "Number"}
_d, _p = Detection.__table__.c, Photo.__table__.c


def tile_box(z: int, x: int, y: int, margin: float = 0.0) -> tuple[float, float, float, float]:
    """West, south, east, north of tile z/x/y, widened by `margin` tiles (web mercator)."""
    n = 2**z

    def lat(ty: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * ty / n))))

    west = max(-180.0, (x - margin) / n * 360 - 180)
    east = min(180.0, (x + 1 + margin) / n * 360 - 180)
    return west, lat(y + 1 + margin), east, lat(y - margin)


def search_box(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The lon/lat box of tile z/x/y widened by its buffer."""
    return tile_box(z, x, y, BUFFER / EXTENT)


def _source(flt: MapFilter) -> Any:
    """detections, joined to photos when the filters read the photo's date."""
    if flt.since or flt.until:
        return Detection.__table__.join(Photo.__table__, _d.photo_id == _p.id)
    return Detection.__table__


def occupied_tiles(
    session: Session, flt: MapFilter, zooms: range
) -> dict[int, set[tuple[int, int]]]:
    """Per zoom, the tiles that hold a matching detection inside them or in their buffer.

    A tile set needs only these: every other tile is empty.
    """
    positions = session.execute(
        sa.select(_d.lon, _d.lat)
        .select_from(_source(flt))
        .where(*flt.detection_conditions(postgis=True))
        .distinct()
    ).all()
    margin = BUFFER / EXTENT
    tiles: dict[int, set[tuple[int, int]]] = {z: set() for z in zooms}
    for lon, lat in positions:
        fx = (lon + 180.0) / 360.0
        fy = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2
        for z in zooms:
            n = 2**z
            xs = {int(fx * n + d) for d in (-margin, 0.0, margin)}
            ys = {int(fy * n + d) for d in (-margin, 0.0, margin)}
            tiles[z].update((x, y) for x in xs for y in ys if 0 <= x < n and 0 <= y < n)
    return tiles


def tile_bytes(session: Session, flt: MapFilter, z: int, x: int, y: int) -> bytes:
    """One tile for the filters; empty bytes when nothing matches."""
    source = _source(flt)
    where = [
        box_term("detections", _d.lat, _d.lon, search_box(z, x, y), postgis=True),
        *flt.detection_conditions(postgis=True),
    ]
    if z >= DETAIL_ZOOM:
        envelope = sa.func.ST_TileEnvelope(z, x, y)
        mvt_geom = sa.func.ST_AsMVTGeom(
            sa.func.ST_Transform(sa.literal_column("detections.geom"), 3857),
            envelope,
            EXTENT,
            BUFFER,
            True,
        )
        rows = (
            sa.select(mvt_geom.label("geom"), _d.id, _d.photo_id, _d.label, _d.score)
            .select_from(source)
            .where(*where)
            .subquery("points")
        )
        layer = sa.select(rows).where(rows.c.geom.is_not(None)).subquery("tile")
    else:
        layer = _clusters(source, where, z, x, y)
    query = sa.select(
        sa.func.ST_AsMVT(sa.literal_column("tile"), LAYER, EXTENT, "geom")
    ).select_from(layer)
    data = session.scalar(query)
    return bytes(data or b"")


def _clusters(source: Any, where: list[Any], z: int, x: int, y: int) -> sa.Subquery:
    """One point per CLUSTER_PX square with its count, best score and commonest label.

    The square comes from lon/lat with web-mercator arithmetic, not from a geometry per
    detection: a city-centre tile holds tens of thousands of them.
    """
    per_tile = EXTENT // CLUSTER_PX * 2**z  # clusters across the world at this zoom
    cx = sa.func.floor((_d.lon + 180.0) * (per_tile / 360.0)) - x * (EXTENT // CLUSTER_PX)
    mercator_y = sa.func.asinh(sa.func.tan(sa.func.radians(_d.lat))) / math.pi
    cy = sa.func.floor((1 - mercator_y) * (per_tile / 2)) - y * (EXTENT // CLUSTER_PX)
    per_label = (
        sa.select(
            cx.label("cx"),
            cy.label("cy"),
            _d.label,
            sa.func.count().label("n"),
            sa.func.max(_d.score).label("top"),
        )
        .select_from(source)
        .where(*where)
        .group_by(cx, cy, _d.label)
        .subquery("per_label")
    )
    c = per_label.c
    half = CLUSTER_PX / 2
    commonest = sa.func.array_agg(aggregate_order_by(c.label, c.n.desc(), c.label))
    return (
        sa.select(
            sa.func.ST_MakePoint(c.cx * CLUSTER_PX + half, c.cy * CLUSTER_PX + half).label("geom"),
            sa.cast(sa.func.sum(c.n), sa.BigInteger).label("count"),
            sa.func.max(c.top).label("max_score"),
            commonest[1].label("label"),
        )
        .group_by(c.cx, c.cy)
        .subquery("tile")
    )
