"""JSON shapes of photos and detections, shared by every endpoint that returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from flask import Response

from trashmap.annotations import review_json
from trashmap.models import AnnotationSet, Detection, Photo


def json_response(body: Any, mimetype: str = "application/json") -> Response:
    """A JSON answer encoded by orjson: big feature collections encode ten times faster."""
    return Response(orjson.dumps(body), mimetype=mimetype)


def iso_taken_at(taken_at: datetime | None, offset: str | None) -> str | None:
    """The camera's wall-clock time, with its UTC offset when the photo stated one."""
    if taken_at is None:
        return None
    return taken_at.isoformat() + (offset or "")


def location_json(photo: Photo) -> dict[str, Any] | None:
    if not photo.has_location:
        return None
    return {"lat": photo.lat, "lon": photo.lon, "alt": photo.alt, "source": photo.location_source}


def upload_json(photo: Photo) -> dict[str, Any]:
    """The upload answer (201 new / 200 duplicate)."""
    return {
        "id": photo.id,
        "status": photo.status,
        "sha256": photo.sha256,
        "width": photo.width,
        "height": photo.height,
        "taken_at": iso_taken_at(photo.taken_at, photo.taken_at_offset),
        "location": location_json(photo),
        "warnings": list(photo.warnings or []),
    }


def detection_json(det: Detection) -> dict[str, Any]:
    return {
        "label": det.label,
        "score": round(det.score, 5),
        "bbox": [round(v, 2) for v in (det.x1, det.y1, det.x2, det.y2)],
    }


def photo_json(
    photo: Photo, detections: list[Detection], annotation_set: AnnotationSet | None = None
) -> dict[str, Any]:
    """A photo with the detections of the model version that last processed it, and
    whether a reviewer verified it (`annotation_set`: its current set)."""
    model = photo.model_version
    return {
        "id": photo.id,
        "status": photo.status,
        "location": location_json(photo),
        "taken_at": iso_taken_at(photo.taken_at, photo.taken_at_offset),
        "width": photo.width,
        "height": photo.height,
        "content_type": photo.content_type,
        "camera": {"make": photo.camera_make, "model": photo.camera_model},
        "warnings": list(photo.warnings or []),
        "model": (
            {"name": model.name, "version": model.version, "untrained": model.untrained}
            if model
            else None
        ),
        "detections": [detection_json(d) for d in detections],
        "review": review_json(annotation_set),
        "error": photo.error,
        "created_at": photo.created_at.isoformat() if photo.created_at else None,
        "processed_at": photo.processed_at.isoformat() if photo.processed_at else None,
    }
