"""Query-string parsing with 400s that say what was wrong (shared by list endpoints)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from web.errors import ApiError

# Row ids are PostgreSQL integers. Routes take any <int:...> and treat a larger one as
# unknown (404): a converter with max= makes werkzeug answer DELETE with a 405 instead.
ID_MAX = 2**31 - 1


def bbox_param(
    args: Mapping[str, str], name: str = "bbox"
) -> tuple[float, float, float, float] | None:
    """`minLon,minLat,maxLon,maxLat` in WGS84 degrees, or None when absent."""
    raw = args.get(name)
    if raw is None or raw == "":
        return None
    parts = raw.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ApiError(400, "invalid_bbox", f"{name} must be minLon,minLat,maxLon,maxLat")
    min_lon, min_lat, max_lon, max_lat = values
    if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
        raise ApiError(400, "invalid_bbox", f"{name} longitudes must lie in [-180, 180]")
    if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
        raise ApiError(400, "invalid_bbox", f"{name} latitudes must lie in [-90, 90]")
    if min_lat > max_lat or min_lon > max_lon:
        raise ApiError(400, "invalid_bbox", f"{name} minimum exceeds maximum")
    return min_lon, min_lat, max_lon, max_lat


def float_param(
    args: Mapping[str, str], name: str, lo: float, hi: float, default: float | None = None
) -> float | None:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a number") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ApiError(400, f"invalid_{name}", f"{name} must lie in [{lo:g}, {hi:g}]")
    return value


def int_param(args: Mapping[str, str], name: str, lo: int, hi: int, default: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"invalid_{name}", f"{name} must lie in [{lo}, {hi}]")
    return value
