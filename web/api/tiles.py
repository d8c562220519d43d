"""GET /api/v1/tiles/{z}/{x}/{y}.mvt: Mapbox vector tiles of detections (PostGIS ST_AsMVT).

Below DETAIL_ZOOM a tile holds clusters (one point per CLUSTER_PX square, with its count);
from DETAIL_ZOOM on, one point per detection. Both sit in the layer `detections`.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, request
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from trashmap.models import Detection, Photo
from web.context import db
from web.errors import ApiError
from web.query.features import is_postgis
from web.query.filters import MapFilter, box_term

bp = Blueprint("tiles", __name__)
LAYER = "detections"
EXTENT = 4096
BUFFER = 64
DETAIL_ZOOM = 14
CLUSTER_PX = 64  # in tile units: 64 x 64 clusters per tile at most
MAX_ZOOM = 24
MVT_TYPE = "application/vnd.mapbox-vector-tile"
_d, _p = Detection.__table__.c, Photo.__table__.c


def search_box(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The lon/lat box of tile z/x/y widened by its buffer (web-mercator tile math)."""
    n = 2**z
    margin = BUFFER / EXTENT

    def lat(ty: float) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * ty / n))))

    west = max(-180.0, (x - margin) / n * 360 - 180)
    east = min(180.0, (x + 1 + margin) / n * 360 - 180)
    return west, lat(y + 1 + margin), east, lat(y - margin)


def tile_bytes(session: Session, flt: MapFilter, z: int, x: int, y: int) -> bytes:
    """One tile for the filters; empty bytes when nothing matches."""
    source = Detection.__table__
    if flt.since or flt.until:
        source = source.join(Photo.__table__, _d.photo_id == _p.id)
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


@bp.get("/tiles/<int:z>/<int:x>/<int:y>.mvt")
def tile(z: int, x: int, y: int):  # type: ignore[no-untyped-def]
    """A vector tile of the detections matching the filters (PostgreSQL + PostGIS only)."""
    if z > MAX_ZOOM or x >= 2**z or y >= 2**z:
        raise ApiError(
            400,
            "invalid_tile",
            f"tile {z}/{x}/{y} does not exist (z <= {MAX_ZOOM}, 0 <= x, y < 2^z)",
        )
    session = db()
    if not is_postgis(session):
        raise ApiError(
            501,
            "tiles_need_postgis",
            "vector tiles need PostgreSQL with PostGIS; "
            "this service runs on the embedded SQLite database (use /api/v1/grid "
            "or /api/v1/detections instead)",
        )
    flt = MapFilter.from_args(request.args)
    response = Response(tile_bytes(session, flt, z, x, y), mimetype=MVT_TYPE)
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
