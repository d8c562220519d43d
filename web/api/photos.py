"""Photos: upload (POST /photos), lookup, the public list of photo points, staff delete."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request
from sqlalchemy import delete, select
from werkzeug.utils import secure_filename

from trashmap.annotations import current_set
from trashmap.imaging import DEFAULT_MAX_PIXELS
from trashmap.ingest import FormError, ingest_photo, parse_client_fields
from trashmap.models import Detection, Photo
from trashmap.storage import StorageUnavailable, delete_photo_objects
from web.api.photo_image import SIZES
from web.auth import require_scope
from web.context import db, services, storage
from web.errors import ApiError
from web.query.listing import list_response
from web.query.params import ID_MAX
from web.query.serialize import photo_json, upload_json

logger = logging.getLogger(__name__)
bp = Blueprint("photos", __name__)


@bp.post("/photos")
def upload_photo():  # type: ignore[no-untyped-def]
    """Store one photo with its geotag and queue it for detection."""
    if not request.content_type or not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, "expected_multipart", "send the photo as multipart/form-data")
    if None in request.files or None in request.form:
        # A part whose Content-Disposition has no name= cannot be any field we know.
        raise ApiError(400, "unknown_field", "a multipart part has no name; name it 'file'")
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
    filename = secure_filename(upload.filename or "") or None
    # The part is read in chunks from Werkzeug's spool file, never whole into memory;
    # StorageUnavailable (-> 503) leaves nothing committed.
    photo, created = ingest_photo(
        db(), upload.stream, filename, client, DEFAULT_MAX_PIXELS, storage=storage()
    )
    if not created:
        return jsonify(upload_json(photo)), 200
    # Enqueued only after the commit in ingest_photo, so the worker always finds the row.
    services().queue.enqueue(photo.id)
    logger.info(
        "photo %s stored (%d bytes, location=%s)", photo.id, photo.byte_size, photo.has_location
    )
    response = jsonify(upload_json(photo))
    response.headers["Location"] = f"/api/v1/photos/{photo.id}"
    return response, 201


@bp.get("/photos/<int:photo_id>")
def get_photo(photo_id: int):  # type: ignore[no-untyped-def]
    """One photo, its status and the detections of the model that last processed it."""
    session = db()
    photo = session.get(Photo, photo_id) if photo_id <= ID_MAX else None
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
    return jsonify(photo_json(photo, detections, current_set(session, photo.id)))


@bp.get("/photos")
def list_photos():  # type: ignore[no-untyped-def]
    """Positioned photos (with or without detections) matching the filters, keyset-paged."""
    return list_response("photos")


@bp.delete("/photos/<int:photo_id>")
@require_scope("write")
def delete_photo(photo_id: int):  # type: ignore[no-untyped-def]
    """Remove a photo, its bytes and its detections (moderation, a takedown request)."""
    if photo_id > ID_MAX:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    session = db()
    # The foreign keys cascade to the detections; the objects go after the commit.
    sha256 = session.scalar(delete(Photo).where(Photo.id == photo_id).returning(Photo.sha256))
    session.commit()
    if sha256 is None:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    try:
        delete_photo_objects(storage(), sha256, SIZES)
    except StorageUnavailable as exc:  # the row is gone: `trashmap storage gc` removes them
        logger.warning("photo %s deleted; its objects are left for gc: %s", photo_id, exc)
    logger.info("photo %s deleted", photo_id)
    return "", 204
