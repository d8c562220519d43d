"""The training set out: verified photos as COCO annotations plus upright, metadata-free images.

`trashmap dataset export` writes it into a folder, GET /api/v1/exports/coco streams it as a
zip; both build it here. Boxes are COCO xywh in the upright photo's pixels, and every image
is written at exactly the width and height its `images` entry states.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from PIL import Image
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from trashmap.annotations import boxes_of, current_sets_query
from trashmap.imaging import decode_oriented
from trashmap.models import AnnotationBox, AnnotationSet, Photo
from trashmap.storage import PhotoBytesMissing, Storage, get_photo_bytes
from trashmap.taxonomy import class_in_set, class_set_files, supercategory_of

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
JPEG_QUALITY = 95


class DatasetError(ValueError):
    """The export cannot be made as asked (an unknown class set)."""


@dataclass(frozen=True)
class DatasetFilter:
    """Which verified photos go out; all fields optional and ANDed.

    since/until compare the camera's time (taken_at, until exclusive); bbox is west, south,
    east, north in degrees; labels keep photos holding a box of one of them, and only those
    boxes (categories: those labels); classes names a shipped class set
    (trashmap/data/classes/), whose
    classes become the categories and whose mapping relabels each box (unmapped boxes drop).
    """

    since: datetime | None = None
    until: datetime | None = None
    bbox: tuple[float, float, float, float] | None = None
    labels: tuple[str, ...] = ()
    classes: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        p = Photo.__table__.c
        terms: list[ColumnElement[bool]] = []
        if self.since is not None:
            terms.append(p.taken_at >= self.since)
        if self.until is not None:
            terms.append(p.taken_at < self.until)
        if self.bbox is not None:
            west, south, east, north = self.bbox
            terms += [p.lon.between(west, east), p.lat.between(south, north)]
        if self.labels:
            b = AnnotationBox.__table__.c
            terms.append(
                sa.exists().where(
                    b.set_id == AnnotationSet.__table__.c.id, b.label.in_(self.labels)
                )
            )
        return terms


@dataclass(frozen=True)
class ExportImage:
    photo_id: int
    file_name: str
    width: int
    height: int


def shipped_class_set(name: str) -> dict[str, Any]:
    """A class set of trashmap/data/classes/ by name (its JSON), or DatasetError."""
    class_set = class_set_files().get(name)
    if class_set is None:
        known = ", ".join(sorted(class_set_files()))
        raise DatasetError(f"unknown class set {name!r}; choose one of {known}")
    return class_set


def build_coco(session: Session, flt: DatasetFilter) -> tuple[dict[str, Any], list[ExportImage]]:
    """The COCO document of every matching photo's current set, and the images to write."""
    class_set = shipped_class_set(flt.classes) if flt.classes is not None else None
    query = current_sets_query().join(Photo, Photo.id == AnnotationSet.photo_id)
    rows = session.execute(query.add_columns(Photo).where(*flt.conditions())).all()
    labelled: list[tuple[Photo, list[tuple[str, list[float]]]]] = []
    used: set[str] = set()
    for annotation_set, photo in rows:
        boxes: list[tuple[str, list[float]]] = []
        for box in boxes_of(annotation_set):
            if flt.labels and box.label not in flt.labels:
                continue
            label = box.label if class_set is None else class_in_set(class_set, box.label)
            if label is None:  # the class set leaves it out
                continue
            boxes.append((label, box.bbox))
            used.add(label)
        labelled.append((photo, boxes))
    if class_set is not None:
        names: Sequence[str] = [str(c) for c in class_set["classes"]]
    elif flt.labels:
        names = sorted(flt.labels)
    else:
        names = sorted(used)
    category_id = {name: i + 1 for i, name in enumerate(names)}
    images: list[ExportImage] = []
    coco_images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for photo, boxes in labelled:
        image = ExportImage(photo.id, f"{IMAGES_DIR}/{photo.id}.jpg", photo.width, photo.height)
        images.append(image)
        coco_images.append(
            {
                "id": photo.id,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "date_captured": photo.taken_at.isoformat() if photo.taken_at else None,
            }
        )
        for label, (x1, y1, x2, y2) in boxes:
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": photo.id,
                    "category_id": category_id[label],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": i, "name": name, "supercategory": _supercategory(name)}
        for name, i in category_id.items()
    ]
    document = {
        "info": {"description": "trashmap verified annotations", "version": "1"},
        "images": coco_images,
        "annotations": annotations,
        "categories": categories,
    }
    return document, images


def _supercategory(name: str) -> str:
    return supercategory_of(name) or name


def upright_jpeg(data: bytes, width: int, height: int) -> bytes:
    """The photo turned upright, at exactly width x height, as a JPEG with no metadata."""
    image, _ = decode_oriented(data)
    if image.size != (width, height):  # only when the decoder's idea of the size moved
        logger.warning("image is %s, annotations say %s: resized", image.size, (width, height))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    image.info = {}  # nothing of the original's EXIF, ICC profile or comments goes out
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def image_files(
    session: Session,
    document: dict[str, Any],
    images: Sequence[ExportImage],
    storage: Storage | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(file name, JPEG bytes) per image, read and re-encoded one at a time.

    A photo whose bytes cannot be read is left out, and taken out of `document` too, so
    write the document after the images.
    """
    missing: set[int] = set()
    for image in images:
        try:
            data = get_photo_bytes(session, image.photo_id, storage)
        except PhotoBytesMissing as exc:
            logger.warning("export: photo %s left out: %s", image.photo_id, exc)
            missing.add(image.photo_id)
            continue
        yield image.file_name, upright_jpeg(data, image.width, image.height)
    if missing:
        document["images"] = [i for i in document["images"] if i["id"] not in missing]
        document["annotations"] = [
            a for a in document["annotations"] if a["image_id"] not in missing
        ]


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are collected, so a zip can be sent as it is made."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


def zip_chunks(
    session: Session, flt: DatasetFilter, storage: Storage | None = None
) -> Iterator[bytes]:
    """The export as a zip, yielded file by file (zipfile writes data descriptors when the
    stream cannot seek, so nothing is held but the file being written). annotations.json
    comes last: it lists only the images that could be written."""
    document, images = build_coco(session, flt)
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:  # type: ignore[arg-type]
        for name, data in image_files(session, document, images, storage):
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED)  # JPEG: no gain
            yield sink.take()
        archive.writestr(
            ANNOTATIONS_FILE, orjson.dumps(document), compress_type=zipfile.ZIP_DEFLATED
        )
    yield sink.take()
    logger.info(
        "coco export: %d images, %d boxes", len(document["images"]), len(document["annotations"])
    )
