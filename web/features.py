"""Detections and photos as map features: the SELECTs, keyset pages, GeoJSON and CSV rows.

The list endpoints and the streamed exports share these, so a filter means the same
thing everywhere. Rows are read with Core selects (no ORM objects) to keep pages cheap.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from web.errors import ApiError
from web.filters import MapFilter
from web.models import Detection, ModelVersion, Photo
from web.serialize import iso_taken_at
from web.taxonomy import supercategory_of

Kind = Literal["detections", "photos"]

_d, _p, _m = Detection.__table__.c, Photo.__table__.c, ModelVersion.__table__.c

CSV_COLUMNS: dict[Kind, list[str]] = {
    "detections": ["id", "photo_id", "lon", "lat", "label", "supercategory", "score",
                   "x1", "y1", "x2", "y2", "model_version", "taken_at"],
    "photos": ["id", "lon", "lat", "status", "taken_at", "width", "height", "detections"],
}


def is_postgis(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def base_select(kind: Kind, flt: MapFilter, postgis: bool) -> sa.Select[Any]:
    """Every matching row's columns, ordered by id (the keyset the pages walk)."""
    if kind == "detections":
        columns = [_d.id, _d.photo_id, _d.lon, _d.lat, _d.label, _d.score, _d.x1, _d.y1,
                   _d.x2, _d.y2, _m.name.label("model_name"), _m.version.label("model_ver"),
                   _p.taken_at, _p.taken_at_offset]
        source = Detection.__table__.join(Photo.__table__, _d.photo_id == _p.id).join(
            ModelVersion.__table__, _d.model_version_id == _m.id)
        return (sa.select(*columns).select_from(source)
                .where(*flt.detection_conditions(postgis)).order_by(_d.id))
    counted = (sa.select(sa.func.count()).where(
        _d.photo_id == _p.id, _d.model_version_id == _p.model_version_id)
        .correlate(Photo.__table__).scalar_subquery())
    columns = [_p.id, _p.lon, _p.lat, _p.status, _p.taken_at, _p.taken_at_offset, _p.width,
               _p.height, counted.label("detections")]
    return sa.select(*columns).where(*flt.photo_conditions(postgis)).order_by(_p.id)


def count_matching(session: Session, kind: Kind, flt: MapFilter) -> int:
    postgis = is_postgis(session)
    if kind == "detections":
        source = Detection.__table__
        if flt.since or flt.until:  # only the time filters need the photo
            source = source.join(Photo.__table__, _d.photo_id == _p.id)
        query = sa.select(sa.func.count()).select_from(source).where(
            *flt.detection_conditions(postgis))
    else:
        query = sa.select(sa.func.count()).select_from(Photo.__table__).where(
            *flt.photo_conditions(postgis))
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class Page:
    rows: list[sa.Row[Any]]
    matched: int
    next_cursor: str | None


def fetch_page(session: Session, kind: Kind, flt: MapFilter, limit: int,
               cursor: str | None) -> Page:
    """One keyset page: rows after the cursor's id, and the count of all matches."""
    postgis = is_postgis(session)
    query = base_select(kind, flt, postgis)
    after = decode_cursor(cursor) if cursor else None
    if kind == "detections":
        # Pick the page's ids first, so only those rows are joined to photos and models
        # (a dense city can match 100 000 detections for a page of 1000).
        source = Detection.__table__
        if flt.since or flt.until:
            source = source.join(Photo.__table__, _d.photo_id == _p.id)
        ids = sa.select(_d.id).select_from(source).where(*flt.detection_conditions(postgis))
        if after is not None:
            ids = ids.where(_d.id > after)
        query = query.where(_d.id.in_(ids.order_by(_d.id).limit(limit + 1).scalar_subquery()))
    elif after is not None:
        query = query.where(_p.id > after)
    rows = list(session.execute(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].id) if more and rows else None
    return Page(rows, count_matching(session, kind, flt), next_cursor)


def stream_rows(session: Session, kind: Kind, flt: MapFilter,
                batch: int = 2000) -> Iterator[sa.Row[Any]]:
    """Every matching row, fetched in server-side batches (never all in memory)."""
    query = base_select(kind, flt, is_postgis(session))
    result = session.execute(query.execution_options(stream_results=True, yield_per=batch))
    yield from result


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        if prefix != "id":
            raise ValueError(text)
        last_id = int(value)
        if not 0 <= last_id < 2**63:
            raise ValueError(text)
        return last_id
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ApiError(400, "invalid_cursor",
                       "cursor must be a next_cursor value from an earlier page") from None


def feature(kind: Kind, row: sa.Row[Any]) -> dict[str, Any]:
    """An RFC 7946 Feature: coordinates are [lon, lat]; no uploader identity."""
    taken_at = iso_taken_at(row.taken_at, row.taken_at_offset)
    if kind == "detections":
        properties = {
            "photo_id": row.photo_id, "label": row.label,
            "supercategory": supercategory_of(row.label), "score": round(row.score, 5),
            "bbox": [round(row.x1, 2), round(row.y1, 2), round(row.x2, 2), round(row.y2, 2)],
            "model_version": f"{row.model_name}:{row.model_ver}", "taken_at": taken_at,
        }
    else:
        properties = {"status": row.status, "taken_at": taken_at, "width": row.width,
                      "height": row.height, "detections": row.detections}
    return {"type": "Feature", "id": row.id,
            "geometry": {"type": "Point", "coordinates": [row.lon, row.lat]},
            "properties": properties}


def properties_of(kind: Kind, row: sa.Row[Any]) -> dict[str, Any]:
    """The flat fields of a row, in CSV column order."""
    taken_at = iso_taken_at(row.taken_at, row.taken_at_offset)
    if kind == "detections":
        return {
            "id": row.id, "photo_id": row.photo_id, "lon": row.lon, "lat": row.lat,
            "label": row.label, "supercategory": supercategory_of(row.label),
            "score": round(row.score, 5),
            "x1": round(row.x1, 2), "y1": round(row.y1, 2),
            "x2": round(row.x2, 2), "y2": round(row.y2, 2),
            "model_version": f"{row.model_name}:{row.model_ver}", "taken_at": taken_at,
        }
    return {"id": row.id, "lon": row.lon, "lat": row.lat, "status": row.status,
            "taken_at": taken_at, "width": row.width, "height": row.height,
            "detections": row.detections}
