"""Vector tiles of detections (PostGIS ST_AsMVT): the SQL the tile API and the PMTiles export share.

Below DETAIL_ZOOM a tile holds clusters (one point per CLUSTER_PX square, with its count);
from DETAIL_ZOOM on, one point per detection. Both sit in the layer `detections`.

Up to ROLLUP_MAX_ZOOM, when the filters allow it, the clusters are the grid-count rollup's
cells (web/query/rollup.py) instead of a scan of the detections: a level z + 3 cell has
exactly a cluster column's width, its height is in degrees rather than web-mercator units,
and its max_score is the lower edge of its best score decile.

A tile's *signature* is (tile_epoch, the sum of the migration-0009 change counters of the
cells its buffered box touches). Every committed write to a detection in those cells
raises the sum, TRUNCATE raises the epoch, nothing lowers either: a tile built under a
signature is current exactly while the signature is unchanged. `read_tile` asks for the
signature when the caller knows one and builds the tile only when it differs; a tile and
its signature always come from one statement (one snapshot).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trashmap.models import Detection, Photo
from web.query.filters import MapFilter, box_term
from web.query.rollup import COUNTS, DELTAS, MAX_LEVEL, cell_of, score_bin

logger = logging.getLogger(__name__)

LAYER = "detections"
EXTENT = 4096
BUFFER = 64
DETAIL_ZOOM = 14
CLUSTER_PX = 64  # in tile units: 64 x 64 clusters per tile at most
MAX_ZOOM = 24
# Names the tiles' layout (in ETags and the tile store's keys): change it when they change.
TILE_FORMAT = "t2"
# What each kind of feature carries, for a tile set's `vector_layers` metadata.
CLUSTER_FIELDS = {"count": "Number", "max_score": "Number", "label": "String"}
DETAIL_FIELDS = {"id": "Number", "photo_id": "Number", "label": "String", "score": "Number"}
# Zooms whose clusters can be rollup cells: level z + 3 cells are CLUSTER_PX tile units wide.
ROLLUP_MAX_ZOOM = MAX_LEVEL - 3
_d, _p = Detection.__table__.c, Photo.__table__.c
Signature = tuple[int, int]


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


def tile_bytes(
    session: Session, flt: MapFilter, z: int, x: int, y: int, source: str = "auto"
) -> bytes:
    """One tile for the filters; empty bytes when nothing matches.

    source: "scan" (clusters from the detections), "rollup" (from the grid counts; only
    where `rollup_allowed`) or "auto" (the rollup where allowed).
    """
    return bytes(session.scalar(_tile_select(flt, z, x, y, source)) or b"")


def rollup_allowed(flt: MapFilter, z: int) -> bool:
    """True when the rollup holds this tile's clusters for these filters (cf. source_level)."""
    return (
        z <= ROLLUP_MAX_ZOOM
        and score_bin(flt.min_score) is not None
        and flt.bbox is None
        and flt.near is None
        and flt.since is None
        and flt.until is None
        and flt.verified is None
    )


def cacheable(flt: MapFilter) -> bool:
    """True when the tile depends on detection rows only, which the change counters cover
    (dates and review state live on photos and annotations)."""
    return flt.since is None and flt.until is None and flt.verified is None


def change_level(z: int) -> int:
    """The counter level whose cells are a zoom-z tile wide (the finest below zoom 13)."""
    return max(0, min(MAX_LEVEL, z - 3))


# The signature alone: what a request with a cached tile asks first (a prepared text
# statement, so that the answer "unchanged" costs almost no Python).
_SIGNATURE = sa.text(
    """
    SELECT (SELECT epoch FROM tile_epoch) AS epoch, (
      SELECT coalesce(sum(n), 0)::bigint FROM (
        SELECT n FROM tile_changes
        WHERE level = :level AND cx BETWEEN :x0 AND :x1 AND cy BETWEEN :y0 AND :y1
        UNION ALL
        SELECT n FROM tile_change_deltas
        WHERE level = :level AND cx BETWEEN :x0 AND :x1 AND cy BETWEEN :y0 AND :y1) AS counted
    ) AS changes
    """
)


# The signature with the stored tile, when the store holds one built under it.
_STORED = sa.text(
    f"""
    SELECT s.epoch, s.changes, t.data
    FROM ({_SIGNATURE.text}) AS s
    LEFT JOIN tile_store AS t ON t.key = :key AND t.epoch = s.epoch AND t.changes = s.changes
    """
)
# Signatures only grow: of two processes storing the same tile, the newer build stays.
_STORE = sa.text(
    """
    INSERT INTO tile_store AS t (key, z, x, y, epoch, changes, data)
    VALUES (:key, :z, :x, :y, :epoch, :changes, :data)
    ON CONFLICT (key) DO UPDATE
    SET epoch = excluded.epoch, changes = excluded.changes, data = excluded.data, built_at = now()
    WHERE (t.epoch, t.changes) < (excluded.epoch, excluded.changes)
    """
)


def _cells(z: int, x: int, y: int) -> dict[str, int]:
    """The change-counter cells the buffered tile touches: level and inclusive ranges."""
    level = change_level(z)
    cell = cell_of(level)
    west, south, east, north = search_box(z, x, y)
    return {
        "level": level,
        "x0": math.floor(west / cell),
        "x1": math.floor(east / cell),
        "y0": math.floor(south / cell),
        "y1": math.floor(north / cell),
    }


def read_tile(
    session: Session, flt: MapFilter, z: int, x: int, y: int, known: Signature | None
) -> tuple[Signature, bytes | None]:
    """The tile's signature and, unless it equals `known`, its bytes (None: unchanged).

    One round trip when `known` is current or the tile store holds the current tile (an
    unfiltered tile: `stored`), else the tile is built (and stored, committing `session`,
    when it is stored and not empty).
    """
    cells = _cells(z, x, y)
    if known is not None:
        epoch, changes = session.execute(_SIGNATURE, cells).one()
        if (epoch, changes) == known:
            return known, None
    if not stored(flt, z):
        return build_tile(session, flt, z, x, y)
    key = store_key(z, x, y)
    epoch, changes, data = session.execute(_STORED, {**cells, "key": key}).one()
    if data is not None:
        return (int(epoch), int(changes)), bytes(data)
    signature, built = build_tile(session, flt, z, x, y)
    if built:  # an empty tile costs one index probe to build, and there are 4^z of them
        _store(session, key, (z, x, y), signature, built)
    return signature, built


def _store(
    session: Session, key: str, tile: tuple[int, int, int], signature: Signature, data: bytes
) -> None:
    """Keep a built tile for every process. The store is a cache: a write that fails (a
    read-only replica, a timeout) costs the next request a build, never this one its tile."""
    z, x, y = tile
    params = {"key": key, "z": z, "x": x, "y": y, "epoch": signature[0], "changes": signature[1]}
    try:
        # A write lost in a crash is rebuilt, so the request waits for no flush.
        session.execute(sa.text("SET LOCAL synchronous_commit = off"))
        session.execute(_STORE, {**params, "data": data})
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        logger.warning("tile %s not stored (it is served all the same): %s", key, exc)


def build_tile(session: Session, flt: MapFilter, z: int, x: int, y: int) -> tuple[Signature, bytes]:
    """A tile built from the detections (or rollup) with its signature, in one statement
    (one snapshot, so the signature is the tile's own)."""
    signature = (
        _SIGNATURE.bindparams(**_cells(z, x, y))
        .columns(sa.column("epoch", sa.BigInteger), sa.column("changes", sa.BigInteger))
        .subquery("signature")
    )
    data = sa.func.coalesce(_tile_select(flt, z, x, y, "auto").scalar_subquery(), b"")
    row = session.execute(sa.select(signature.c.epoch, signature.c.changes, data)).one()
    return (int(row[0]), int(row[1])), bytes(row[2])


def stored(flt: MapFilter, z: int) -> bool:
    """True for the tiles the tile store keeps: the unfiltered ones, which every visitor's
    first view asks for, up to DETAIL_ZOOM (filtered tiles vary without bound, deeper ones
    hold few detections each; the process cache has them)."""
    return z <= DETAIL_ZOOM and flt == MapFilter()


def store_key(z: int, x: int, y: int) -> str:
    """The tile store's key: the tile and the tile format, so a release that changes the
    format never serves tiles an older one stored."""
    return f"{TILE_FORMAT}/{z}/{x}/{y}"


def _tile_select(flt: MapFilter, z: int, x: int, y: int, source: str) -> sa.Select[Any]:
    if source == "rollup" or (source == "auto" and rollup_allowed(flt, z)):
        if not rollup_allowed(flt, z):
            raise ValueError(f"the rollup cannot answer tile {z}/{x}/{y} for {flt}")
        layer = _rollup_clusters(flt, z, x, y)
    else:
        layer = _scanned(flt, z, x, y)
    return sa.select(
        sa.func.ST_AsMVT(sa.literal_column("tile"), LAYER, EXTENT, "geom")
    ).select_from(layer)


def _scanned(flt: MapFilter, z: int, x: int, y: int) -> sa.Subquery:
    """The tile's features from the detections in its buffered box."""
    source = _source(flt)
    where = [
        box_term("detections", _d.lat, _d.lon, search_box(z, x, y), postgis=True),
        *flt.detection_conditions(postgis=True),
    ]
    if z < DETAIL_ZOOM:
        return _clusters(source, where, z, x, y)
    # Tile units from lon/lat arithmetic, as for clusters: no geometry is built per
    # detection, and the covering point index (migration 0011) answers without the heap.
    px, py = _mercator(_d.lon, _d.lat, 2**z * EXTENT)
    rows = (
        sa.select(
            sa.func.round(px - x * EXTENT).label("px"),
            sa.func.round(py - y * EXTENT).label("py"),
            _d.id,
            _d.photo_id,
            _d.label,
            _d.score,
        )
        .select_from(source)
        .where(*where)
        .subquery("points")
    )
    p = rows.c
    return (
        sa.select(
            sa.func.ST_MakePoint(p.px, p.py).label("geom"), p.id, p.photo_id, p.label, p.score
        )
        .where(p.px.between(-BUFFER, EXTENT + BUFFER), p.py.between(-BUFFER, EXTENT + BUFFER))
        .subquery("tile")
    )


def _mercator(lon: Any, lat: Any, world: float) -> tuple[Any, Any]:
    """Web-mercator x and y (downwards) of lon/lat in degrees, `world` units across the world."""
    mercator_y = sa.func.asinh(sa.func.tan(sa.func.radians(lat))) / math.pi
    return (lon + 180.0) * (world / 360.0), (1 - mercator_y) * (world / 2)


def _rollup_clusters(flt: MapFilter, z: int, x: int, y: int) -> sa.Subquery:
    """One point per rollup cell of level z + 3 whose centre lies in the buffered tile.

    Pending deltas are added in, as /grid does, so counts are exact whenever this runs.
    """
    level = z + 3
    cell = cell_of(level)
    min_bin = score_bin(flt.min_score)
    assert min_bin is not None, "see rollup_allowed()"
    west, south, east, north = search_box(z, x, y)
    parts = []
    for table in (COUNTS, DELTAS):
        t = table.c
        parts.append(
            sa.select(t.cx, t.cy, t.label, t.score_bin, t.n).where(
                t.level == level,
                t.score_bin >= min_bin,
                t.cx.between(math.floor(west / cell), math.floor(east / cell)),
                t.cy.between(math.floor(south / cell), math.floor(north / cell)),
                *flt.label_terms(t.label),
                *flt.model_version_terms(t.model_version_id),
            )
        )
    rolled = sa.union_all(*parts).subquery("rolled")
    r = rolled.c
    # Deltas can cancel counts: only bins still holding detections name a best score.
    held = sa.func.sum(r.n)
    bins = (
        sa.select(r.cx, r.cy, r.label, r.score_bin, held.label("n"))
        .group_by(r.cx, r.cy, r.label, r.score_bin)
        .having(held > 0)
        .subquery("bins")
    )
    b = bins.c
    per_label = (
        sa.select(
            b.cx, b.cy, b.label, sa.func.sum(b.n).label("n"), sa.func.max(b.score_bin).label("top")
        )
        .group_by(b.cx, b.cy, b.label)
        .subquery("per_label")
    )
    c = per_label.c
    px, py = _mercator((c.cx + 0.5) * cell, (c.cy + 0.5) * cell, 2**z * EXTENT)
    px, py = px - x * EXTENT, py - y * EXTENT
    commonest = sa.func.array_agg(aggregate_order_by(c.label, c.n.desc(), c.label))
    cells = (
        sa.select(
            sa.func.round(px).label("px"),
            sa.func.round(py).label("py"),
            sa.cast(sa.func.sum(c.n), sa.BigInteger).label("count"),
            (sa.cast(sa.func.max(c.top), sa.Float) / 10.0).label("max_score"),
            commonest[1].label("label"),
        )
        .group_by(c.cx, c.cy)
        .subquery("cells")
    )
    k = cells.c
    return (
        sa.select(sa.func.ST_MakePoint(k.px, k.py).label("geom"), k.count, k.max_score, k.label)
        .where(k.px.between(-BUFFER, EXTENT + BUFFER), k.py.between(-BUFFER, EXTENT + BUFFER))
        .subquery("tile")
    )


def _clusters(source: Any, where: list[Any], z: int, x: int, y: int) -> sa.Subquery:
    """One point per CLUSTER_PX square with its count, best score and commonest label.

    The square comes from lon/lat with web-mercator arithmetic, not from a geometry per
    detection: a city-centre tile holds tens of thousands of them.
    """
    fx, fy = _mercator(_d.lon, _d.lat, EXTENT // CLUSTER_PX * 2**z)  # in clusters
    cx = sa.func.floor(fx) - x * (EXTENT // CLUSTER_PX)
    cy = sa.func.floor(fy) - y * (EXTENT // CLUSTER_PX)
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
