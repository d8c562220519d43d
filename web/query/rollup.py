"""Reading the grid-count rollup: /grid cells counted from it, its edges from detections.

Migration 0003 defines the rollup: every write to `detections` appends count changes per
cell to `grid_count_deltas`, and `trashmap_fold_grid_counts()` (run by workers after each
photo and by the reconciler) moves them into `grid_counts`. A read adds both in one
statement, so its counts are exact whenever it runs. Cells are the /grid cells of zoom
levels 0..MAX_LEVEL, split by label, model version and score decile, so the map's usual
filters (label, supercategory, model version, min_score in steps of 0.1) are answered
from it; other filters (dates, near) count detections directly.
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from trashmap.models import Detection
from web.query.filters import MapFilter, box_term

# The same constants as migrations/versions/0003_map_speed.py.
MAX_LEVEL = 10
SCORE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Slack, in degrees, when deciding whether a cell lies wholly inside a bbox: a point's
# cell is floor(lon / cell) in floating point, which can round across a cell edge.
EDGE_SLACK = 1e-9
# A bbox is read from a level it spans at least this many cells of, so that the strips
# along its edges, which are counted directly, hold a small share of its detections.
MIN_CELLS_ACROSS = 16

_d = Detection.__table__.c
_COLUMNS = ("level", "cx", "cy", "label", "model_version_id", "score_bin", "n")
COUNTS = sa.table("grid_counts", *(sa.column(name) for name in _COLUMNS))
DELTAS = sa.table("grid_count_deltas", *(sa.column(name) for name in _COLUMNS))


def level_of(cell: float) -> int | None:
    """The rollup level whose cells are `cell` degrees wide, if there is one."""
    for level in range(MAX_LEVEL + 1):
        if cell == cell_of(level):
            return level
    return None


def cell_of(level: int) -> float:
    return 45.0 / 2**level


def score_bin(min_score: float | None) -> int | None:
    """The lowest score bin a min_score keeps (0: all); None when it falls inside a bin."""
    if not min_score:
        return 0
    if min_score in SCORE_THRESHOLDS:
        return SCORE_THRESHOLDS.index(min_score) + 1
    return None


def source_level(flt: MapFilter, cell: float) -> int | None:
    """The rollup level to count `flt` in cells of `cell` degrees from; None: count directly.

    A level-z cell is four level-(z+1) cells (floor(lon / cell) only loses a power of two),
    so a small bbox reads a finer level and adds its cells up: the strips along the bbox's
    edges, counted directly, then stay thin.
    """
    level = level_of(cell)
    if (
        level is None
        or score_bin(flt.min_score) is None
        or flt.near is not None
        or flt.since is not None
        or flt.until is not None
        or flt.verified is not None  # the rollup does not know which photos were reviewed
    ):
        return None
    if flt.bbox is None:
        return level
    west, south, east, north = flt.bbox
    span = min(east - west, north - south)
    for source in range(level, MAX_LEVEL + 1):
        if span >= MIN_CELLS_ACROSS * cell_of(source):
            return source
    return None


def _inner_range(low: float, high: float, cell: float, world: float) -> tuple[int, int] | None:
    """Cells wholly inside [low, high] on one axis (the world's edge counts as inside)."""
    first = -(2**31) if low <= -world else math.ceil((low + EDGE_SLACK) / cell)
    last = 2**31 - 1 if high >= world else math.floor((high - EDGE_SLACK) / cell) - 1
    return (first, last) if first <= last else None


def cell_counts(
    session: Session, flt: MapFilter, cell: float, source: int, limit: int
) -> list[sa.Row[Any]]:
    """(col, row, n) of the non-empty cells, ordered, at most `limit` of them.

    Cells of level `source` wholly inside the bbox come from the rollup; the strips the
    bbox's edges cut through are counted from the detections there, so a partly covered
    cell counts only what lies inside the bbox, as the direct query does.
    """
    level = level_of(cell)
    min_bin = score_bin(flt.min_score)
    assert level is not None and min_bin is not None and source >= level, "see source_level()"
    shift = source - level
    box = flt.bbox or (-180.0, -90.0, 180.0, 90.0)
    cols = _inner_range(box[0], box[2], cell_of(source), 180.0)
    rows = _inner_range(box[1], box[3], cell_of(source), 90.0)
    parts = []
    if cols and rows:
        for table in (COUNTS, DELTAS):
            c = table.c
            parts.append(
                sa.select(c.cx.op(">>")(shift), c.cy.op(">>")(shift), c.n).where(
                    c.level == source,
                    c.score_bin >= min_bin,
                    c.cx.between(*cols),
                    c.cy.between(*rows),
                    *flt.label_terms(c.label),
                    *flt.model_version_terms(c.model_version_id),
                )
            )
    edges = _edge_select(flt, cell, cell_of(source), box, cols, rows)
    if edges is not None:
        parts.append(edges)
    cells = sa.union_all(*parts).subquery("cells")
    cx, cy, n = cells.c
    total = sa.func.sum(n)
    query = (
        sa.select(cx.label("col"), cy.label("row"), total.label("n"))
        .group_by(cx, cy)
        .having(total > 0)
        .order_by(cx, cy)
        .limit(limit)
    )
    return list(session.execute(query))


def _edge_select(
    flt: MapFilter,
    cell: float,
    source_cell: float,
    box: tuple[float, float, float, float],
    cols: tuple[int, int] | None,
    rows: tuple[int, int] | None,
) -> sa.Select[Any] | None:
    """Detections inside the bbox whose source cell the rollup part did not count."""

    def floor_of(value: Any, size: float) -> Any:
        return sa.cast(sa.func.floor(value / size), sa.Integer)

    conditions = flt.detection_conditions(postgis=True)
    if cols and rows:
        west, south, east, north = box
        # Strips along each cut edge, a hair wider than the cells they hold, so the point
        # index finds them; the floor() test then keeps exactly the uncounted cells.
        strips = []
        if west > -180:
            strips.append((west, south, cols[0] * source_cell + EDGE_SLACK, north))
        if east < 180:
            strips.append(((cols[1] + 1) * source_cell - EDGE_SLACK, south, east, north))
        if south > -90:
            strips.append((west, south, east, rows[0] * source_cell + EDGE_SLACK))
        if north < 90:
            strips.append((west, (rows[1] + 1) * source_cell - EDGE_SLACK, east, north))
        if not strips:
            return None
        inner = sa.and_(
            floor_of(_d.lon, source_cell).between(*cols),
            floor_of(_d.lat, source_cell).between(*rows),
        )
        conditions += [
            sa.or_(*(box_term("detections", _d.lat, _d.lon, s, True) for s in strips)),
            sa.not_(inner),
        ]
    return (
        sa.select(floor_of(_d.lon, cell), floor_of(_d.lat, cell), sa.literal(1))
        .select_from(Detection.__table__)
        .where(*conditions)
    )
