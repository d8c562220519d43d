"""Detections on the map: GET /api/v1/detections as GeoJSON (RFC 7946) or CSV, paged."""

from __future__ import annotations

from flask import Blueprint

from web.query.listing import MAX_LIMIT, list_response

bp = Blueprint("detections", __name__)
__all__ = ["MAX_LIMIT", "bp"]


@bp.get("/detections")
def list_detections():  # type: ignore[no-untyped-def]
    """Positioned detections matching the filters (see web.query.filters), by id, keyset-paged."""
    return list_response("detections")
