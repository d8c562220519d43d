"""Turn an uploaded file plus form fields into a stored Photo row (no Flask here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trashmap.exif import GeoTag, coordinate_problem, read_exif
from trashmap.geodesy import distance_m
from trashmap.imaging import inspect_image
from trashmap.models import LocationSource, Photo, PhotoStatus
from trashmap.storage import Storage, default_storage, staged_upload, store_original

ALLOWED_FIELDS = frozenset({"lat", "lon", "taken_at"})
DISAGREEMENT_WARN_M = 1000.0


class FormError(ValueError):
    """A form field the client sent is unusable (HTTP 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ClientFields:
    """What the uploading browser or app may tell us when the photo itself cannot."""

    geotag: GeoTag | None = None
    taken_at: datetime | None = None
    taken_at_offset: str | None = None


def parse_client_fields(form: Mapping[str, str]) -> ClientFields:
    """Validate the optional `lat`, `lon`, `taken_at` form fields."""
    unknown = sorted(str(name) for name in set(form) - ALLOWED_FIELDS)  # a part may lack a name
    if unknown:
        raise FormError(
            "unknown_field",
            f"unknown form field(s) {', '.join(unknown)}; allowed: file, lat, lon, taken_at",
        )
    lat_raw, lon_raw = form.get("lat", "").strip(), form.get("lon", "").strip()
    geotag = None
    if "lat" in form or "lon" in form:  # an empty one is a client bug, not "no location"
        if not (lat_raw and lon_raw):
            raise FormError(
                "invalid_location", "send both lat and lon (decimal degrees), or neither"
            )
        try:
            lat, lon = float(lat_raw), float(lon_raw)
        except ValueError:
            raise FormError("invalid_location", "lat and lon must be decimal degrees") from None
        problem = coordinate_problem(lat, lon)
        if problem:
            raise FormError("invalid_location", problem)
        geotag = GeoTag(lat=lat, lon=lon)
    taken_at, offset = _parse_taken_at(form.get("taken_at", "").strip())
    return ClientFields(geotag=geotag, taken_at=taken_at, taken_at_offset=offset)


def _parse_taken_at(raw: str) -> tuple[datetime | None, str | None]:
    if not raw:
        return None, None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise FormError(
            "invalid_taken_at", "taken_at must be ISO 8601, e.g. 2024-05-01T14:30:00+02:00"
        ) from None
    if value.year < 1900 or value.year > 2200:
        raise FormError("invalid_taken_at", "taken_at must be between years 1900 and 2200")
    offset = None
    if value.utcoffset() is not None:
        minutes = int(value.utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
        sign = "-" if minutes < 0 else "+"
        offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return value.replace(tzinfo=None), offset


def find_by_sha256(session: Session, sha256: str) -> Photo | None:
    return session.scalar(select(Photo).where(Photo.sha256 == sha256))


def ingest_photo(
    session: Session,
    upload: IO[bytes] | bytes,
    filename: str | None,
    client: ClientFields,
    max_pixels: int,
    storage: Storage | None = None,
) -> tuple[Photo, bool]:
    """Store a new photo (status queued) and commit; (photo, created).

    `upload` is read in chunks (a request's spooled file), hashed and inspected from a
    local spool file, stored as an object, and only then is its row committed: a row
    always has its bytes. A storage outage raises StorageUnavailable before any commit.
    A byte-identical photo returns the existing row with created=False. The unique
    sha256 constraint settles two identical uploads that arrive at the same moment.
    """
    storage = storage or default_storage()
    with staged_upload(storage, upload) as staged:
        existing = find_by_sha256(session, staged.sha256)
        if existing is not None:
            return existing, False
        photo = _describe(staged.path, staged.sha256, staged.size, filename, client, max_pixels)
        store_original(storage, staged)
    session.add(photo)
    try:
        session.commit()
    except IntegrityError:
        # The same bytes committed by another upload meanwhile: its row owns the object.
        session.rollback()
        existing = find_by_sha256(session, photo.sha256)
        if existing is None:
            raise
        return existing, False
    return photo, True


def _describe(
    path: Path,
    sha256: str,
    size: int,
    filename: str | None,
    client: ClientFields,
    max_pixels: int,
) -> Photo:
    """The new photo's row, from its pixels, its EXIF and the client's fields."""
    image = inspect_image(path, max_pixels=max_pixels)  # raises ImageError -> 415/422
    with open(path, "rb") as fh:
        exif = read_exif(fh)
    warnings = list(exif.warnings)
    geotag, source = exif.geotag, LocationSource.exif if exif.geotag else None
    if client.geotag is not None:
        if geotag is None:
            geotag, source = client.geotag, LocationSource.client
        else:
            gap = distance_m(geotag.lat, geotag.lon, client.geotag.lat, client.geotag.lon)
            if gap > DISAGREEMENT_WARN_M:
                warnings.append(
                    f"the position sent differs from the photo's EXIF GPS by {gap / 1000:.1f} km;"
                    " the EXIF position is kept"
                )
    if geotag is None:
        warnings.append("no location: the photo is kept and analysed but cannot appear on the map")
    taken_at, offset = exif.taken_at, exif.taken_at_offset
    if taken_at is None and client.taken_at is not None:
        taken_at, offset = client.taken_at, client.taken_at_offset
    photo = Photo(
        sha256=sha256,
        content_type=image.content_type,
        byte_size=size,
        original_filename=(filename or None) and filename[-255:],
        width=image.width,
        height=image.height,
        orientation=image.orientation,
        lat=geotag.lat if geotag else None,
        lon=geotag.lon if geotag else None,
        alt=geotag.alt if geotag else None,
        location_source=source.value if source else None,
        taken_at=taken_at,
        taken_at_offset=offset,
        camera_make=exif.make and exif.make[:128],
        camera_model=exif.model and exif.model[:128],
        warnings=warnings,
        status=PhotoStatus.queued.value,
    )
    return photo
