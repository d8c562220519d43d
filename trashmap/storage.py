"""The only code that knows where a photo's bytes live: the original (a table apart from the
metadata) and its public renditions (derivatives, computed once and kept)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trashmap.models import Photo, PhotoBlob, PhotoDerivative

logger = logging.getLogger(__name__)


class PhotoBytesMissing(LookupError):
    """The photo row exists but its bytes do not (deleted or never written)."""


def put_photo_bytes(session: Session, photo: Photo, data: bytes) -> None:
    """Attach the original upload bytes to `photo` (written with the same commit)."""
    photo.blob = PhotoBlob(data=data)


def get_photo_bytes(session: Session, photo_id: int) -> bytes:
    """The original bytes of photo `photo_id`, exactly as uploaded."""
    data = session.scalar(select(PhotoBlob.data).where(PhotoBlob.photo_id == photo_id))
    if data is None:
        raise PhotoBytesMissing(f"photo {photo_id} has no stored bytes")
    return data


def get_derivative(session: Session, sha256: str, size: int) -> bytes | None:
    """The stored rendition `size` of the photo with this sha256, or None if not made yet."""
    return session.scalar(
        select(PhotoDerivative.data).where(
            PhotoDerivative.sha256 == sha256, PhotoDerivative.size == size
        )
    )


def put_derivative(session: Session, sha256: str, size: int, data: bytes) -> None:
    """Keep a rendition and commit; a concurrent request that stored it first wins."""
    session.add(PhotoDerivative(sha256=sha256, size=size, data=data))
    try:
        session.commit()
    except IntegrityError:  # the same rendition, written by another request meanwhile
        session.rollback()
        logger.debug("derivative %s/%s was stored concurrently", sha256[:12], size)
