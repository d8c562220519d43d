"""GET /api/v1/photos/<id>/image: the photo as the public sees it, re-encoded without metadata.

The original keeps its metadata (GPS, camera serial numbers, comments, ICC profiles that
name their maker); this copy is turned upright, converted to sRGB and written anew as a
JPEG with no metadata segment at all. Only a few sizes exist, each computed once per photo
and kept as a storage object (trashmap.storage), so a request after the first costs one
row read and one object read; with TRASHMAP_STORAGE_PRESIGN an s3:// deployment answers
with a redirect to a presigned URL, and the client fetches the bytes from the bucket.
"""

from __future__ import annotations

import io
import logging

from flask import Blueprint, Response, redirect, request
from PIL import Image, ImageCms

from trashmap.imaging import decode_oriented
from trashmap.models import Photo
from trashmap.storage import (
    DatabaseStorage,
    PhotoBytesMissing,
    derivative_key,
    get_derivative,
    put_derivative,
    read_original,
)
from web.context import db, services, storage
from web.errors import ApiError
from web.query.params import ID_MAX

logger = logging.getLogger(__name__)
bp = Blueprint("photo_image", __name__)
# The longest side of each rendition; without max_size the largest is served (or the
# photo's own size when it is smaller).
SIZES = (256, 512, 1024, 2048)
MAX_SIDE = SIZES[-1]
# A presigned URL lives this long; the redirect itself is cached for less.
PRESIGN_S = 3600
CACHE_CONTROL = "public, max-age=86400"
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _srgb(image: Image.Image) -> Image.Image:
    """Pixels converted from the photo's embedded ICC profile to sRGB (the profile is not
    passed on: its description and copyright fields can name a person or a device)."""
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    try:
        converted = ImageCms.profileToProfile(
            image, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _SRGB, outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        logger.info("ICC profile ignored: %s", exc)
        return image
    return converted if converted is not None else image


def public_jpeg(data: bytes, max_side: int) -> bytes:
    """Upright sRGB pixels, longest side at most `max_side`, as a fresh metadata-free JPEG."""
    image, _ = decode_oriented(data, target=(max_side, max_side))
    image = _srgb(image)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Pillow would write info's ICC profile and comment back out: start from nothing.
    image.info = {}
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()


def _max_side() -> int:
    raw = request.args.get("max_size")
    if raw is None:
        return MAX_SIDE
    if raw not in {str(size) for size in SIZES}:
        raise ApiError(
            400, "invalid_max_size", f"max_size must be one of {', '.join(map(str, SIZES))}"
        )
    return int(raw)


@bp.get("/photos/<int:photo_id>/image")
def photo_image(photo_id: int):  # type: ignore[no-untyped-def]
    """The photo as JPEG without metadata; `max_size` (longest side) for thumbnails."""
    max_side = _max_side()
    session = db()
    photo = session.get(Photo, photo_id) if photo_id <= ID_MAX else None
    if photo is None:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    # Renditions larger than the photo are the photo's own size: one cache entry for them.
    side = min(max_side, max(photo.width, photo.height) or max_side)
    etag = f"{photo.sha256[:32]}-{side}"
    if etag in request.if_none_match:
        return Response(status=304, headers={"ETag": f'"{etag}"'})
    store = storage()
    # Presigned: the client fetches the bytes from the bucket, so they need not be read here.
    presign = services().settings.storage_presign and store.can_presign
    stored = presign and store.exists(derivative_key(photo.sha256, side))
    jpeg = None if stored else get_derivative(store, photo.sha256, side)
    if jpeg is None and not stored:
        try:
            data = read_original(store, photo.sha256, legacy_blobs())
        except PhotoBytesMissing as exc:
            logger.warning("photo %s: no usable original: %s", photo_id, exc)
            raise ApiError(404, "not_found", f"photo {photo_id} has no stored image") from None
        jpeg = public_jpeg(data, side)
        put_derivative(store, photo.sha256, side, jpeg)
    if presign:
        url = store.presigned_url(derivative_key(photo.sha256, side), PRESIGN_S)
        moved = redirect(str(url), 302)
        moved.headers["Cache-Control"] = f"public, max-age={PRESIGN_S // 2}"
        return moved
    response = Response(jpeg, mimetype="image/jpeg")
    response.set_etag(etag)
    # The bytes of a photo never change; a deleted photo's URL answers 404.
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def legacy_blobs() -> DatabaseStorage:
    """Originals still in the database table (until `trashmap storage migrate`)."""
    return DatabaseStorage(services().engine)
