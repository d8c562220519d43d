"""Detections and photos as map features: the SELECTs, keyset pages, GeoJSON and CSV rows.

The list endpoints and the streamed exports share these, so a filter means the same
thing everywhere. Rows are read with Core selects (no ORM objects) to keep pages cheap.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from trashmap.models import Detection, ModelVersion, Photo
from trashmap.taxonomy import supercategory_of
from web.errors import ApiError
from web.query.filters import MapFilter
from web.query.serialize import iso_taken_at

Kind = Literal["detections", "photos"]

_d, _p, _m = Detection.__table__.c, Photo.__table__.c, ModelVersion.__table__.c

CSV_COLUMNS: dict[Kind, list[str]] = {
    "detections": [
        "id",
        "photo_id",
        "lon",
        "lat",
        "WKT",
        "label",
        "supercategory",
        "score",
        "box_x1",
        "box_y1",
        "box_x2",
        "box_y2",
        "model_version",
        "taken_at",
    ],
    "photos": ["id", "lon", "lat", "WKT", "status", "taken_at", "width", "height", "detections"],
}


def is_postgis(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def row_select(kind: Kind) -> sa.Select[Any]:
    """The columns a feature of `kind` shows, from every row (no filter), ordered by id."""
    if kind == "detections":
        columns = [
            _d.id,
            _d.photo_id,
            _d.lon,
            _d.lat,
            _d.label,
            _d.score,
            _d.x1,
            _d.y1,
            _d.x2,
            _d.y2,
            _m.name.label("model_name"),
            _m.version.label("model_ver"),
            _p.taken_at,
            _p.taken_at_offset,
        ]
        source = Detection.__table__.join(Photo.__table__, _d.photo_id == _p.id).join(
            ModelVersion.__table__, _d.model_version_id == _m.id
        )
        return sa.select(*columns).select_from(source).order_by(_d.id)
    counted = (
        sa.select(sa.func.count())
        .where(_d.photo_id == _p.id, _d.model_version_id == _p.model_version_id)
        .correlate(Photo.__table__)
        .scalar_subquery()
    )
    columns = [
        _p.id,
        _p.lon,
        _p.lat,
        _p.status,
        _p.taken_at,
        _p.taken_at_offset,
        _p.width,
        _p.height,
        counted.label("detections"),
    ]
    return sa.select(*columns).order_by(_p.id)


def base_select(kind: Kind, flt: MapFilter, postgis: bool) -> sa.Select[Any]:
    """Every matching row's columns, ordered by id (the keyset the pages walk)."""
    if kind == "detections":
        return row_select(kind).where(*flt.detection_conditions(postgis))
    return row_select(kind).where(*flt.photo_conditions(postgis))


def matching_ids(kind: Kind, flt: MapFilter, postgis: bool) -> sa.Select[Any]:
    """The ids of the matching rows, reading no more tables than the filters need."""
    if kind == "photos":
        return sa.select(_p.id).where(*flt.photo_conditions(postgis))
    source = Detection.__table__
    if flt.since or flt.until:  # only the time filters need the photo
        source = source.join(Photo.__table__, _d.photo_id == _p.id)
    return sa.select(_d.id).select_from(source).where(*flt.detection_conditions(postgis))


def count_matching(session: Session, kind: Kind, flt: MapFilter) -> int:
    ids = matching_ids(kind, flt, is_postgis(session)).subquery()
    return int(session.scalar(sa.select(sa.func.count()).select_from(ids)) or 0)


@dataclass(frozen=True)
class Page:
    rows: list[sa.Row[Any]]
    matched: int
    next_cursor: str | None
    prev_cursor: str | None = None


def fetch_page(
    session: Session, kind: Kind, flt: MapFilter, limit: int, cursor: str | None
) -> Page:
    """One keyset page: rows after the cursor's id (before it, for a prev_cursor), and
    the count of all matches.

    One statement counts the matching ids and picks the page's, and joins only those to
    their columns. On PostgreSQL a bbox alone is answered from the point index; scanning
    it twice is faster than keeping the ids in a CTE.
    """
    after, backward = decode_cursor(cursor, kind) if cursor else (None, False)
    postgis = is_postgis(session)
    id_column = _d.id if kind == "detections" else _p.id
    total = (
        sa.select(sa.func.count())
        .select_from(matching_ids(kind, flt, postgis).subquery())
        .scalar_subquery()
    )
    page_ids = matching_ids(kind, flt, postgis)
    if after is not None:
        page_ids = page_ids.where(id_column < after if backward else id_column > after)
    page_ids = page_ids.order_by(id_column.desc() if backward else id_column).limit(limit + 1)
    query = (
        row_select(kind)
        .add_columns(total.label("matched_total"))
        .where(id_column.in_(page_ids.scalar_subquery()))
    )
    rows = list(session.execute(query).all())  # one fetchall, not a fetch per row
    more = len(rows) > limit  # rows ascend by id: backwards, the extra one is the first
    rows = rows[1:] if more and backward else rows[:limit]
    if backward:
        next_cursor = encode_cursor(kind, rows[-1].id) if rows else None
        prev_cursor = encode_cursor(kind, rows[0].id, before=True) if more and rows else None
    else:
        next_cursor = encode_cursor(kind, rows[-1].id) if more and rows else None
        first = rows[0].id if after is not None and rows else None
        prev_cursor = None if first is None else encode_cursor(kind, first, before=True)
    if rows:
        total_matched = int(rows[0].matched_total)
    else:  # an empty page carries no count; past the last page there may still be matches
        total_matched = count_matching(session, kind, flt) if after is not None else 0
    return Page(rows, total_matched, next_cursor, prev_cursor)


def stream_rows(
    session: Session, kind: Kind, flt: MapFilter, batch: int = 2000
) -> Iterator[sa.Row[Any]]:
    """Every matching row, fetched in server-side batches (never all in memory)."""
    query = base_select(kind, flt, is_postgis(session))
    result = session.execute(query.execution_options(stream_results=True, yield_per=batch))
    yield from result


def encode_cursor(kind: Kind, last_id: int, before: bool = False) -> str:
    """The opaque cursor: the list it pages and the id the page starts after (or, for a
    previous page, `before`: the id it ends before)."""
    text = f"{kind}:{'<' if before else ''}{last_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: Kind) -> tuple[int, bool]:
    """(id, before) of a cursor that `kind`'s list made; a cursor of another list is a 400."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        before = value.startswith("<")
        last_id = int(value.removeprefix("<"))
        if prefix not in ("detections", "photos") or not 0 <= last_id < 2**63:
            raise ValueError(text)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ApiError(
            400, "invalid_cursor", "cursor must be a next_cursor value from an earlier page"
        ) from None
    if prefix != kind:
        raise ApiError(
            400, "invalid_cursor", f"this cursor pages /{prefix}; it cannot page /{kind}"
        )
    return last_id, before


# Rows are unpacked by position (row_select's column order), once, in _properties: a
# 1000-feature page spends most of its Python time here, and named access costs 4x more.
def _properties(kind: Kind, row: Sequence[Any]) -> tuple[Any, float, float, dict[str, Any]]:
    """(id, lon, lat, the feature's properties) of one row."""
    if kind == "detections":
        (
            fid,
            photo_id,
            lon,
            lat,
            label,
            score,
            x1,
            y1,
            x2,
            y2,
            model_name,
            model_ver,
            taken_at,
            offset,
        ) = row[:14]
        return (
            fid,
            lon,
            lat,
            {
                "photo_id": photo_id,
                "label": label,
                "supercategory": supercategory_of(label),
                "score": round(score, 5),
                # Four numbers, not a `bbox` array: RFC 7946 reserves that member name, and
                # GIS tools read an array property as text.
                "box_x1": round(x1, 2),
                "box_y1": round(y1, 2),
                "box_x2": round(x2, 2),
                "box_y2": round(y2, 2),
                "model_version": f"{model_name}:{model_ver}",
                "taken_at": iso_taken_at(taken_at, offset),
            },
        )
    fid, lon, lat, status, taken_at, offset, width, height, detections = row[:9]
    return (
        fid,
        lon,
        lat,
        {
            "status": status,
            "taken_at": iso_taken_at(taken_at, offset),
            "width": width,
            "height": height,
            "detections": detections,
        },
    )


def feature(kind: Kind, row: Sequence[Any]) -> dict[str, Any]:
    """An RFC 7946 Feature: coordinates are [lon, lat]; no uploader identity."""
    fid, lon, lat, properties = _properties(kind, row)
    return {
        "type": "Feature",
        "id": fid,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": properties,
    }


def point_wkt(lon: float, lat: float) -> str:
    """The position as WKT, which GDAL's CSV driver reads from a column named WKT."""
    return f"POINT ({lon!r} {lat!r})"


def properties_of(kind: Kind, row: Sequence[Any]) -> dict[str, Any]:
    """The flat fields of a row, in CSV column order (the position also as WKT)."""
    fid, lon, lat, properties = _properties(kind, row)
    fields = {"id": fid, "lon": lon, "lat": lat, "WKT": point_wkt(lon, lat), **properties}
    return {name: fields[name] for name in CSV_COLUMNS[kind]}
