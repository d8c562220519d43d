"""The only code that knows where a photo's original bytes live (a table apart from metadata)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trashmap.models import Photo, PhotoBlob


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
