"""Photo bytes -> GeoTag, capture time and camera, via exifread; bad EXIF becomes warnings."""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import exifread

logger = logging.getLogger(__name__)

_OFFSET_RE = re.compile(r"^[+-](?:[01]\d|2[0-3]):[0-5]\d$")
_EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"


@dataclass(frozen=True)
class GeoTag:
    """A WGS84 position; altitude in metres, negative below sea level."""

    lat: float
    lon: float
    alt: float | None = None


@dataclass(frozen=True)
class ExifInfo:
    """What the upload keeps from a photo's EXIF."""

    geotag: GeoTag | None = None
    taken_at: datetime | None = None
    taken_at_offset: str | None = None
    make: str | None = None
    model: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


class GpsValueError(ValueError):
    """A GPS tag is present but its value cannot be a coordinate."""


def read_exif(data: bytes | BinaryIO) -> ExifInfo:
    """Read GPS, DateTimeOriginal (+ OffsetTimeOriginal) and Make/Model from bytes or an
    open file (read where it needs, not whole); never raises."""
    try:
        tags = exifread.process_file(
            io.BytesIO(data) if isinstance(data, bytes) else data, details=False
        )
    except Exception as exc:  # exifread has no single error type for corrupt files
        logger.info("EXIF unreadable: %s", exc)
        return ExifInfo(warnings=(f"EXIF could not be read ({type(exc).__name__})",))
    warnings: list[str] = []
    geotag = parse_gps(tags, warnings)
    taken_at, offset = parse_taken_at(tags, warnings)
    return ExifInfo(
        geotag=geotag,
        taken_at=taken_at,
        taken_at_offset=offset,
        make=_text(tags.get("Image Make")),
        model=_text(tags.get("Image Model")),
        warnings=tuple(warnings),
    )


def parse_gps(tags: dict[str, Any], warnings: list[str]) -> GeoTag | None:
    """GeoTag from exifread tags, or None with a warning saying why it is unusable."""
    lat_tag, lon_tag = tags.get("GPS GPSLatitude"), tags.get("GPS GPSLongitude")
    if lat_tag is None and lon_tag is None:
        if any(key.startswith("GPS ") for key in tags):
            warnings.append("EXIF has a GPS block without coordinates")
        return None
    if lat_tag is None or lon_tag is None:
        warnings.append("EXIF GPS has only one of latitude/longitude")
        return None
    try:
        lat = _degrees(lat_tag) * _sign(tags.get("GPS GPSLatitudeRef"), "S")
        lon = _degrees(lon_tag) * _sign(tags.get("GPS GPSLongitudeRef"), "W")
    except GpsValueError as exc:
        warnings.append(f"EXIF GPS unusable: {exc}")
        return None
    problem = coordinate_problem(lat, lon)
    if problem:
        warnings.append(f"EXIF GPS unusable: {problem}")
        return None
    return GeoTag(lat=lat, lon=lon, alt=_altitude(tags, warnings))


def coordinate_problem(lat: float, lon: float) -> str | None:
    """Why (lat, lon) cannot be a real photo position, or None when it can."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "coordinates are not finite numbers"
    if not -90 <= lat <= 90:
        return f"latitude {lat} is out of range [-90, 90]"
    if not -180 <= lon <= 180:
        return f"longitude {lon} is out of range [-180, 180]"
    if lat == 0 and lon == 0:
        return "position 0,0 (null island) is a missing fix, not a place"
    return None


def parse_taken_at(tags: dict[str, Any], warnings: list[str]) -> tuple[datetime | None, str | None]:
    """DateTimeOriginal (else DateTimeDigitized) and its OffsetTimeOriginal, if valid."""
    for key, offset_key in (
        ("EXIF DateTimeOriginal", "EXIF OffsetTimeOriginal"),
        ("EXIF DateTimeDigitized", "EXIF OffsetTimeDigitized"),
    ):
        raw = _text(tags.get(key))
        if raw is None:
            continue
        try:
            taken_at = datetime.strptime(raw[:19], _EXIF_TIME_FORMAT)
        except ValueError:
            warnings.append(f"EXIF {key.split()[-1]} {raw!r} is not a date")
            continue
        offset = _text(tags.get(offset_key))
        if offset is not None and not _OFFSET_RE.match(offset):
            warnings.append(f"EXIF {offset_key.split()[-1]} {offset!r} ignored")
            offset = None
        return taken_at, offset
    return None, None


def _ratio(value: Any) -> float:
    numerator = getattr(value, "numerator", value)
    denominator = getattr(value, "denominator", 1)
    # exifread keeps 0/0 rationals as num/den attributes rather than raising.
    numerator = getattr(value, "num", numerator)
    denominator = getattr(value, "den", denominator)
    try:
        numerator, denominator = float(numerator), float(denominator)
    except (TypeError, ValueError):
        raise GpsValueError(f"value {value!r} is not a number") from None
    if denominator == 0:
        raise GpsValueError("a rational has a zero denominator")
    return numerator / denominator


def _degrees(tag: Any) -> float:
    values = tag.values
    if isinstance(values, (str, bytes)):
        raise GpsValueError(f"degrees stored as text ({str(values)[:40]!r})")
    values = list(values)
    if len(values) != 3:
        raise GpsValueError(f"expected degrees, minutes, seconds; got {len(values)} value(s)")
    degrees, minutes, seconds = (_ratio(v) for v in values)
    if minutes < 0 or seconds < 0 or minutes >= 60 or seconds >= 60:
        raise GpsValueError(f"minutes/seconds out of range ({minutes}, {seconds})")
    return degrees + minutes / 60 + seconds / 3600


def _sign(ref_tag: Any, negative: str) -> float:
    ref = (_text(ref_tag) or "").upper()[:1]
    return -1.0 if ref == negative else 1.0


def _altitude(tags: dict[str, Any], warnings: list[str]) -> float | None:
    tag = tags.get("GPS GPSAltitude")
    if tag is None:
        return None
    try:
        values = tag.values
        alt = _ratio(values[0] if isinstance(values, list) else values)
    except (GpsValueError, IndexError, TypeError) as exc:
        warnings.append(f"EXIF GPS altitude ignored: {exc}")
        return None
    if not math.isfinite(alt):
        warnings.append("EXIF GPS altitude ignored: not a finite number")
        return None
    ref = tags.get("GPS GPSAltitudeRef")
    ref_values = getattr(ref, "values", [0]) if ref is not None else [0]
    below_sea_level = bool(ref_values) and ref_values[0] in (1, b"\x01", "1")
    return -abs(alt) if below_sea_level else alt


def _text(tag: Any) -> str | None:
    if tag is None:
        return None
    text = str(tag.printable if hasattr(tag, "printable") else tag).replace("\x00", "").strip()
    return text or None
