"""GET /api/v1/photos/<id>/image: the photo as the public sees it, re-encoded without EXIF.

The original keeps its metadata (GPS, camera serial numbers); this copy is turned upright,
decoded and written anew as JPEG with no EXIF, XMP or comments, optionally shrunk.
"""

from __future__ import annotations

import io

from flask import Blueprint, Response, request
from PIL import Image

from trashmap.imaging import decode_oriented
from trashmap.models import Photo
from trashmap.storage import PhotoBytesMissing, get_photo_bytes
from web.context import db
from web.errors import ApiError
from web.query.params import int_param

bp = Blueprint("photo_image", __name__)
MAX_SIDE = 8192


def public_jpeg(data: bytes, max_size: int | None) -> bytes:
    """Upright RGB pixels as a fresh JPEG: nothing of the original's metadata is passed on."""
    target = (max_size, max_size) if max_size else None
    image, _ = decode_oriented(data, target=target)
    if max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


@bp.get("/photos/<int(max=2147483647):photo_id>/image")
def photo_image(photo_id: int):  # type: ignore[no-untyped-def]
    """The photo as JPEG without metadata; `max_size` (pixels, longest side) for thumbnails."""
    max_size = int_param(request.args, "max_size", 16, MAX_SIDE, 0) or None
    session = db()
    photo = session.get(Photo, photo_id)
    if photo is None:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    try:
        data = get_photo_bytes(session, photo_id)
    except PhotoBytesMissing:
        raise ApiError(404, "not_found", f"photo {photo_id} has no stored image") from None
    etag = f"{photo.sha256[:32]}-{max_size or 0}"
    if etag in request.if_none_match:
        return Response(status=304)
    response = Response(public_jpeg(data, max_size), mimetype="image/jpeg")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response
