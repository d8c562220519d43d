"""Photo upload and lookup: POST /api/v1/photos, GET /api/v1/photos/<id>."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from sqlalchemy import select
from werkzeug.utils import secure_filename

from web.context import db, services
from web.errors import ApiError
from web.ingest import FormError, ingest_photo, parse_client_fields
from web.imaging import DEFAULT_MAX_PIXELS
from web.models import Detection, Photo
from web.serialize import photo_json, upload_json

logger = logging.getLogger(__name__)
bp = Blueprint("photos", __name__)


@bp.post("/photos")
def upload_photo():  # type: ignore[no-untyped-def]
    """Store one photo with its geotag and queue it for detection."""
    if not request.content_type or not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "expected_multipart", "send the photo as multipart/form-data")
    files = request.files.getlist("file")
    extra_files = sorted(set(request.files) - {"file"})
    if extra_files:
        raise ApiError(400, "unknown_field", f"unexpected file field(s): {', '.join(extra_files)}")
    if len(files) != 1:
        raise ApiError(400, "missing_file", "send exactly one photo in the multipart field 'file'")
    try:
        client = parse_client_fields(request.form.to_dict(flat=True))
    except FormError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    upload = files[0]
    data = upload.read()
    filename = secure_filename(upload.filename or "") or None
    photo, created = ingest_photo(db(), data, filename, client, DEFAULT_MAX_PIXELS)
    if not created:
        return jsonify(upload_json(photo)), 200
    # Enqueued only after the commit in ingest_photo, so the worker always finds the row.
    services().queue.enqueue(photo.id)
    logger.info("photo %s stored (%d bytes, location=%s)", photo.id, len(data), photo.has_location)
    response = jsonify(upload_json(photo))
    response.headers["Location"] = f"/api/v1/photos/{photo.id}"
    return response, 201


@bp.get("/photos/<int:photo_id>")
def get_photo(photo_id: int):  # type: ignore[no-untyped-def]
    """One photo, its status and the detections of the model that last processed it."""
    session = db()
    photo = session.get(Photo, photo_id)
    if photo is None:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    detections: list[Detection] = []
    if photo.model_version_id is not None:
        detections = list(
            session.scalars(
                select(Detection)
                .where(
                    Detection.photo_id == photo.id,
                    Detection.model_version_id == photo.model_version_id,
                )
                .order_by(Detection.score.desc(), Detection.id)
            )
        )
    return jsonify(photo_json(photo, detections))
