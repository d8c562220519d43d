"""GET /api/v1/tiles/{z}/{x}/{y}.mvt: Mapbox vector tiles of detections (PostGIS ST_AsMVT).

Below DETAIL_ZOOM a tile holds clusters (one point per CLUSTER_PX square, with its count);
from DETAIL_ZOOM on, one point per detection. Both sit in the layer `detections`.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Response, request
from sqlalchemy.orm import Session

from web.context import db
from web.errors import ApiError
from web.features import is_postgis
from web.filters import MapFilter
from web.models import Detection, Photo

bp = Blueprint("tiles", __name__)
LAYER = "detections"
EXTENT = 4096
BUFFER = 64
DETAIL_ZOOM = 14
CLUSTER_PX = 64  # in tile units: 64 x 64 clusters per tile at most
MAX_ZOOM = 24
MVT_TYPE = "application/vnd.mapbox-vector-tile"
_d, _p = Detection.__table__.c, Photo.__table__.c


def tile_bytes(session: Session, flt: MapFilter, z: int, x: int, y: int) -> bytes:
    """One tile for the filters; empty bytes when nothing matches."""
    envelope = sa.func.ST_TileEnvelope(z, x, y)
    # The margin keeps points just outside the tile that its buffer still draws.
    # z, x, y are integers checked by the view, so they can be inlined.
    search = sa.func.ST_Transform(sa.literal_column(
        f"ST_TileEnvelope({int(z)}, {int(x)}, {int(y)}, margin => {BUFFER / EXTENT})"), 4326)
    geom = sa.literal_column("detections.geom")
    mvt_geom = sa.func.ST_AsMVTGeom(sa.func.ST_Transform(geom, 3857), envelope, EXTENT, BUFFER,
                                    True)
    source = Detection.__table__
    if flt.since or flt.until:
        source = source.join(Photo.__table__, _d.photo_id == _p.id)
    where = [geom.op("&&")(search), *flt.detection_conditions(postgis=True)]
    if z >= DETAIL_ZOOM:
        rows = (sa.select(mvt_geom.label("geom"), _d.id, _d.photo_id, _d.label, _d.score)
                .select_from(source).where(*where).subquery("points"))
        layer = sa.select(rows).where(rows.c.geom.is_not(None)).subquery("tile")
    else:
        points = (sa.select(mvt_geom.label("g"), _d.label, _d.score)
                  .select_from(source).where(*where).subquery("points"))
        cx = sa.func.floor(sa.func.ST_X(points.c.g) / CLUSTER_PX)
        cy = sa.func.floor(sa.func.ST_Y(points.c.g) / CLUSTER_PX)
        half = CLUSTER_PX / 2
        layer = (
            sa.select(
                sa.func.ST_MakePoint(cx * CLUSTER_PX + half, cy * CLUSTER_PX + half).label("geom"),
                sa.func.count().label("count"),
                sa.func.max(points.c.score).label("max_score"),
                sa.func.mode().within_group(points.c.label).label("label"),
            )
            .where(points.c.g.is_not(None)).group_by(cx, cy).subquery("tile"))
    query = sa.select(sa.func.ST_AsMVT(sa.literal_column("tile"), LAYER, EXTENT, "geom")) \
        .select_from(layer)
    data = session.scalar(query)
    return bytes(data or b"")


@bp.get("/tiles/<int:z>/<int:x>/<int:y>.mvt")
def tile(z: int, x: int, y: int):  # type: ignore[no-untyped-def]
    """A vector tile of the detections matching the filters (PostgreSQL + PostGIS only)."""
    if z > MAX_ZOOM or x >= 2**z or y >= 2**z:
        raise ApiError(400, "invalid_tile", f"tile {z}/{x}/{y} does not exist (z <= {MAX_ZOOM},"
                       " 0 <= x, y < 2^z)")
    session = db()
    if not is_postgis(session):
        raise ApiError(501, "tiles_need_postgis", "vector tiles need PostgreSQL with PostGIS; "
                       "this service runs on the embedded SQLite database (use /api/v1/grid "
                       "or /api/v1/detections instead)")
    flt = MapFilter.from_args(request.args)
    response = Response(tile_bytes(session, flt, z, x, y), mimetype=MVT_TYPE)
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
