"""GET /api/v1/grid: detections counted per lon/lat cell inside the database (heat maps)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, request
from sqlalchemy.orm import Session

from trashmap.models import Detection, Photo
from web.context import db
from web.errors import ApiError
from web.query import rollup
from web.query.features import is_postgis
from web.query.filters import MapFilter
from web.query.params import float_param, int_param
from web.query.serialize import json_response

bp = Blueprint("grid", __name__)
CELLS_PER_TILE = 8  # at zoom z a cell is an eighth of a web-map tile's width
MIN_CELL_DEG = 0.0001
MAX_CELLS = 100_000
_d, _p = Detection.__table__.c, Photo.__table__.c


def cell_for_zoom(zoom: int) -> float:
    return 360.0 / (2**zoom) / CELLS_PER_TILE


def grid_cells(session: Session, flt: MapFilter, cell: float) -> list[dict[str, Any]]:
    """(column, row) counts of matching detections, for cells of `cell` degrees."""
    source = rollup.source_level(flt, cell) if is_postgis(session) else None
    if source is not None:
        rows = rollup.cell_counts(session, flt, cell, source, MAX_CELLS + 1)
    else:
        rows = direct_cell_counts(session, flt, cell)
    if len(rows) > MAX_CELLS:
        raise ApiError(
            400,
            "too_many_cells",
            f"more than {MAX_CELLS} cells: use a bigger cell, a lower zoom or a bbox",
        )
    return [{"col": int(r.col), "row": int(r.row), "count": int(r.n)} for r in rows]


def direct_cell_counts(session: Session, flt: MapFilter, cell: float) -> list[sa.Row[Any]]:
    """The cells counted from the detections themselves (any filter, either backend)."""
    col = sa.func.floor(_d.lon / cell).label("col")
    row = sa.func.floor(_d.lat / cell).label("row")
    count = sa.func.count().label("n")
    source = Detection.__table__
    if flt.since or flt.until:
        source = source.join(Photo.__table__, _d.photo_id == _p.id)
    query = (
        sa.select(col, row, count)
        .select_from(source)
        .where(*flt.detection_conditions(is_postgis(session)))
        .group_by(col, row)
        .order_by(col, row)
        .limit(MAX_CELLS + 1)
    )
    return list(session.execute(query))


def cell_feature(cell: float, col: int, row: int, count: int) -> dict[str, Any]:
    west, south = max(-180.0, col * cell), max(-90.0, row * cell)
    east, north = min(180.0, (col + 1) * cell), min(90.0, (row + 1) * cell)
    # The cell's edges as four numbers, not a `bbox` member: RFC 7946's bbox bounds a
    # feature's geometry (here its centre point), and GIS tools read no array property.
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [(west + east) / 2, (south + north) / 2]},
        "properties": {"count": count, "west": west, "south": south, "east": east, "north": north},
    }


@bp.get("/grid")
def grid():  # type: ignore[no-untyped-def]
    """Counts per cell: `cell` in degrees, or `zoom` (a web-map zoom level; default 2)."""
    if request.args.get("cell") and request.args.get("zoom"):
        raise ApiError(400, "invalid_cell", "give cell or zoom, not both")
    cell = float_param(request.args, "cell", MIN_CELL_DEG, 90.0)
    if cell is None:
        cell = cell_for_zoom(int_param(request.args, "zoom", 0, 24, 2))
    flt = MapFilter.from_args(request.args)
    cells = grid_cells(db(), flt, cell)
    return json_response(
        {
            "type": "FeatureCollection",
            "cell_deg": cell,
            "total": sum(c["count"] for c in cells),
            "features": [cell_feature(cell, c["col"], c["row"], c["count"]) for c in cells],
        }
    )
