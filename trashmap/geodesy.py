"""Distances on the WGS84 mean sphere, shared by uploads (in Python) and map queries (in SQL)."""

from __future__ import annotations

import math

# The IUGG mean Earth radius: the sphere every distance in trashmap is measured on.
EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def circle_bbox(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """A (west, south, east, north) box that contains the circle, clamped to the world."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    coslat = math.cos(math.radians(min(89.9, abs(lat) + dlat)))
    dlon = min(180.0, dlat / max(coslat, 1e-6))
    return (
        max(-180.0, lon - dlon),
        max(-90.0, lat - dlat),
        min(180.0, lon + dlon),
        min(90.0, lat + dlat),
    )
