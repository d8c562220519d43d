"""GET /api/v1/tiles/{z}/{x}/{y}.mvt: Mapbox vector tiles of detections (web/query/tiles.py)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from web.context import db
from web.errors import ApiError
from web.query.features import is_postgis
from web.query.filters import MapFilter
from web.query.tiles import BUFFER as BUFFER
from web.query.tiles import DETAIL_ZOOM as DETAIL_ZOOM
from web.query.tiles import EXTENT as EXTENT
from web.query.tiles import LAYER as LAYER
from web.query.tiles import MAX_ZOOM as MAX_ZOOM
from web.query.tiles import tile_bytes

bp = Blueprint("tiles", __name__)
MVT_TYPE = "application/vnd.mapbox-vector-tile"


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
