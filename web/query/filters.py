"""The map filters every query endpoint shares, parsed once and turned into SQL conditions.

On PostgreSQL the position filters go through the PostGIS `geom` columns (GiST indexes);
on SQLite the same filters compare plain lat/lon, with the same results.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from trashmap.annotations import verified_term
from trashmap.geodesy import EARTH_RADIUS_M, circle_bbox
from trashmap.models import Detection, ModelVersion, Photo
from trashmap.taxonomy import labels_in, supercategories
from web.errors import ApiError
from web.query.params import bbox_param, float_param

MAX_RADIUS_M = 1_000_000.0
STATUSES = ("queued", "processing", "done", "failed")
# The query parameters MapFilter reads (OpenAPI documents the same names).
FILTER_PARAMS = (
    "bbox",
    "near",
    "radius_m",
    "label",
    "supercategory",
    "min_score",
    "since",
    "until",
    "model_version",
    "verified",
)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Near:
    """A circle on the ground: centre in degrees, radius in metres."""

    lat: float
    lon: float
    radius_m: float

    def bbox(self) -> tuple[float, float, float, float]:
        """A lon/lat box that contains the circle (lets an index do the first cut)."""
        return circle_bbox(self.lat, self.lon, self.radius_m)


@dataclass(frozen=True)
class MapFilter:
    """What a client asked for; every field optional, all of them ANDed."""

    bbox: tuple[float, float, float, float] | None = None
    near: Near | None = None
    labels: tuple[str, ...] = ()
    supercategory: str | None = None
    min_score: float | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    model_version: tuple[str, str] | None = None
    statuses: tuple[str, ...] = field(default=())
    # True: photos with a verified annotation set only; False: unreviewed photos only.
    verified: bool | None = None

    @property
    def filters_detections(self) -> bool:
        """True when a photo must have a matching detection to pass."""
        return bool(
            self.labels or self.supercategory or self.min_score is not None or self.model_version
        )

    @classmethod
    def from_args(cls, args: Any) -> MapFilter:
        """Parse the query string (a werkzeug MultiDict) or raise a 400 ApiError."""
        reject_empty(args)
        for name, value in args.items(multi=True):
            if "\x00" in value:  # PostgreSQL text cannot hold NUL; no label contains one
                raise ApiError(400, f"invalid_{name}", f"{name} contains a NUL character")
        supercategory = args.get("supercategory") or None
        if supercategory is not None and supercategory not in supercategories():
            raise ApiError(
                400,
                "invalid_supercategory",
                f"supercategory must be one of: {', '.join(supercategories())}",
            )
        statuses = tuple(s for s in args.getlist("status") if s)
        bad = sorted(set(statuses) - set(STATUSES))
        if bad:
            raise ApiError(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
        since, until = _time_param(args, "since", False), _time_param(args, "until", True)
        if since is not None and until is not None and since >= until:
            raise ApiError(400, "invalid_until", "until must be later than since")
        return cls(
            bbox=bbox_param(args),
            near=_near_param(args),
            labels=tuple(sorted({label for label in args.getlist("label") if label})),
            supercategory=supercategory,
            min_score=float_param(args, "min_score", 0.0, 1.0),
            since=since,
            until=until,
            model_version=_model_version_param(args),
            statuses=statuses,
            verified=_verified_param(args),
        )

    def detection_conditions(self, postgis: bool) -> list[ColumnElement[bool]]:
        """WHERE terms for `detections` joined to `photos` (positioned detections only)."""
        d = Detection.__table__.c
        terms = _position_terms(self, "detections", d.lat, d.lon, postgis)
        terms += self._detection_only_terms()
        terms += self._time_terms()
        terms += self.verified_terms(d.photo_id)  # needs no join to photos
        return terms

    def photo_conditions(self, postgis: bool) -> list[ColumnElement[bool]]:
        """WHERE terms for `photos`: positioned photos, with or without detections."""
        p = Photo.__table__.c
        terms = _position_terms(self, "photos", p.lat, p.lon, postgis)
        terms += self._time_terms()
        terms += self.verified_terms(p.id)
        if self.statuses:
            terms.append(p.status.in_(self.statuses))
        if self.filters_detections:
            d = Detection.__table__.c
            terms.append(sa.exists().where(d.photo_id == p.id, *self._detection_only_terms()))
        return terms

    def _detection_only_terms(self) -> list[ColumnElement[bool]]:
        d = Detection.__table__.c
        terms = self.label_terms(d.label) + self.model_version_terms(d.model_version_id)
        if self.min_score is not None:
            terms.append(d.score >= self.min_score)
        return terms

    def label_terms(self, label: Any) -> list[ColumnElement[bool]]:
        """The label and supercategory filters, on any column that holds a label."""
        terms: list[ColumnElement[bool]] = []
        if self.labels:
            terms.append(label.in_(self.labels))
        if self.supercategory:
            terms.append(label.in_(labels_in(self.supercategory)))
        return terms

    def model_version_terms(self, model_version_id: Any) -> list[ColumnElement[bool]]:
        """The model_version filter, on any column that holds a model_versions.id."""
        if self.model_version is None:
            return []
        name, version = self.model_version
        m = ModelVersion.__table__.c
        return [
            model_version_id.in_(
                sa.select(m.id).where(m.name == name, m.version == version).scalar_subquery()
            )
        ]

    def verified_terms(self, photo_id: Any) -> list[ColumnElement[bool]]:
        """The verified filter, on any column that holds a photos.id."""
        if self.verified is None:
            return []
        term = verified_term(photo_id)
        return [term if self.verified else ~term]

    def _time_terms(self) -> list[ColumnElement[bool]]:
        taken_at = Photo.__table__.c.taken_at
        terms: list[ColumnElement[bool]] = []
        if self.since is not None:
            terms.append(taken_at >= self.since)
        if self.until is not None:
            terms.append(taken_at < self.until)
        return terms


def reject_empty(args: Any) -> None:
    """`name=` with nothing after it is a 400: the OpenAPI document gives every parameter a
    minimum length, and an empty value silently meaning "absent" hides client bugs."""
    for name, value in args.items(multi=True):
        if value == "":
            raise ApiError(400, f"invalid_{name}", f"{name} is empty; leave it out instead")


def _position_terms(
    flt: MapFilter, table: str, lat: Any, lon: Any, postgis: bool
) -> list[ColumnElement[bool]]:
    """Positioned rows only, inside every box and circle the filter names."""
    boxes = [flt.bbox] if flt.bbox is not None else []
    if flt.near is not None:
        boxes.append(flt.near.bbox())
    if not boxes:
        return [lat.is_not(None), lon.is_not(None)]
    # A box implies a position, so no IS NOT NULL terms: they would read the table row and
    # stop PostgreSQL from answering a bbox query from the point index alone.
    terms = [box_term(table, lat, lon, box, postgis) for box in boxes]
    if flt.near is not None:
        terms.append(haversine_m(lat, lon, flt.near.lat, flt.near.lon) <= flt.near.radius_m)
    return terms


def box_term(
    table: str, lat: Any, lon: Any, box: tuple[float, float, float, float], postgis: bool
) -> ColumnElement[bool]:
    """Inside the lon/lat box, edges included, compared exactly on both backends."""
    min_lon, min_lat, max_lon, max_lat = box
    exact = sa.and_(lon.between(min_lon, max_lon), lat.between(min_lat, max_lat))
    if not postgis:
        return exact
    if table == "detections":
        # The SP-GiST point index (migration 0003): exact, and it carries the id.
        corners = sa.func.box(sa.func.point(min_lon, min_lat), sa.func.point(max_lon, max_lat))
        return sa.literal_column("detections.pt").op("<@")(corners)
    # The GiST index compares float4 boxes, so it can let through points a hair outside.
    envelope = sa.func.ST_MakeEnvelope(min_lon, min_lat, max_lon, max_lat, 4326)
    return sa.and_(sa.literal_column(f"{table}.geom").op("&&")(envelope), exact)


def haversine_m(lat: Any, lon: Any, lat0: float, lon0: float) -> ColumnElement[float]:
    """Great-circle distance in SQL (trashmap.geodesy.distance_m's sphere, on both backends)."""
    dlat = sa.func.radians(lat - lat0) / 2
    dlon = sa.func.radians(lon - lon0) / 2
    sin_dlat, sin_dlon = sa.func.sin(dlat), sa.func.sin(dlon)
    h = (
        sin_dlat * sin_dlat
        + math.cos(math.radians(lat0)) * sa.func.cos(sa.func.radians(lat)) * sin_dlon * sin_dlon
    )
    return 2 * EARTH_RADIUS_M * sa.func.asin(sa.func.sqrt(h))


def _near_param(args: Mapping[str, str]) -> Near | None:
    raw = args.get("near")
    if not raw:
        if args.get("radius_m"):
            raise ApiError(400, "invalid_near", "radius_m needs near=lat,lon")
        return None
    try:
        lat, lon = (float(part) for part in raw.split(","))
    except ValueError:
        raise ApiError(400, "invalid_near", "near must be lat,lon in decimal degrees") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ApiError(400, "invalid_near", "near must be lat,lon within [-90, 90], [-180, 180]")
    radius = float_param(args, "radius_m", 0.0, MAX_RADIUS_M)
    if radius is None:
        raise ApiError(400, "invalid_radius_m", "near needs radius_m (metres)")
    return Near(lat, lon, radius)


def _time_param(args: Mapping[str, str], name: str, end: bool) -> datetime | None:
    """ISO date or datetime (the camera's wall-clock time); a date `until` includes that day."""
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        if _DATE_ONLY.match(raw):
            day = date.fromisoformat(raw)
            value = datetime(day.year, day.month, day.day) + (
                timedelta(days=1) if end else timedelta(0)
            )
        else:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00")).replace(tzinfo=None)
            if end:
                value += timedelta(microseconds=1)  # a datetime `until` is inclusive
    except (ValueError, OverflowError):
        raise ApiError(
            400, f"invalid_{name}", f"{name} must be an ISO 8601 date or datetime, e.g. 2024-05-01"
        ) from None
    if not 1900 <= value.year <= 2200:
        raise ApiError(400, f"invalid_{name}", f"{name} must be between years 1900 and 2200")
    return value


def _verified_param(args: Mapping[str, str]) -> bool | None:
    raw = args.get("verified")
    if not raw:
        return None
    if raw not in ("true", "false"):
        raise ApiError(400, "invalid_verified", "verified must be true or false")
    return raw == "true"


def _model_version_param(args: Mapping[str, str]) -> tuple[str, str] | None:
    raw = args.get("model_version")
    if not raw:
        return None
    name, sep, version = raw.partition(":")
    if not (sep and name and version):
        raise ApiError(400, "invalid_model_version", "model_version must be name:version")
    return name, version
