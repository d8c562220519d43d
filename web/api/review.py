"""Reviewing (scope `review`): the queue of unreviewed photos, and each photo's verified set.

GET /api/v1/review/queue, GET and PUT /api/v1/photos/<id>/annotations. The rules live in
trashmap.annotations; this module only speaks HTTP.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, jsonify, request
from sqlalchemy.sql.elements import ColumnElement
from werkzeug.datastructures import MultiDict

from trashmap.annotations import (
    AnnotationError,
    allowed_labels,
    history,
    parse_set,
    review_queue,
    save_set,
    set_json,
)
from trashmap.models import Detection, Photo
from web.auth import current_api_key, require_scope
from web.context import db
from web.errors import ApiError
from web.query.features import is_postgis
from web.query.filters import MapFilter
from web.query.params import ID_MAX, int_param
from web.query.serialize import photo_json

logger = logging.getLogger(__name__)
bp = Blueprint("review", __name__)
QUEUE_PARAMS = ("limit", "bbox", "near", "radius_m", "label", "supercategory", "since", "until")
MAX_QUEUE = 200


def _photo(photo_id: int) -> Photo:
    photo = db().get(Photo, photo_id) if photo_id <= ID_MAX else None
    if photo is None:
        raise ApiError(404, "not_found", f"no photo with id {photo_id}")
    return photo


def queue_conditions(flt: MapFilter, postgis: bool) -> list[ColumnElement[bool]]:
    """The filters on the queue: a position filter keeps positioned photos only (as on the
    map), while without one unpositioned photos are reviewed too; a label or supercategory
    keeps photos with such a detection."""
    if flt.bbox is not None or flt.near is not None:
        return flt.photo_conditions(postgis)
    p, d = Photo.__table__.c, Detection.__table__.c
    terms: list[ColumnElement[bool]] = []
    if flt.since is not None:
        terms.append(p.taken_at >= flt.since)
    if flt.until is not None:
        terms.append(p.taken_at < flt.until)
    labels = flt.label_terms(d.label)
    if labels:
        terms.append(sa.exists().where(d.photo_id == p.id, *labels))
    return terms


@bp.get("/review/queue")
@require_scope("review")
def queue():  # type: ignore[no-untyped-def]
    """Unreviewed done photos, most informative first, each with its detections."""
    unknown = sorted(set(request.args) - set(QUEUE_PARAMS))
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
    limit = int_param(request.args, "limit", 1, MAX_QUEUE, 20)
    flt = MapFilter.from_args(
        MultiDict([(k, v) for k, v in request.args.items(multi=True) if k != "limit"])
    )
    session = db()
    entries = review_queue(session, queue_conditions(flt, is_postgis(session)), limit)
    return jsonify(
        {
            "photos": [
                {**photo_json(e.photo, e.detections), "priority": e.reasons()} for e in entries
            ],
            "count": len(entries),
        }
    )


@bp.get("/photos/<int:photo_id>/annotations")
@require_scope("review")
def get_annotations(photo_id: int):  # type: ignore[no-untyped-def]
    """The current verified set (null when unreviewed) and every set before it."""
    photo = _photo(photo_id)
    sets = history(db(), photo.id)
    return jsonify(
        {
            "photo_id": photo.id,
            "width": photo.width,
            "height": photo.height,
            "current": set_json(sets[0]) if sets else None,
            "history": [set_json(s) for s in sets],
        }
    )


@bp.put("/photos/<int:photo_id>/annotations")
@require_scope("review")
def put_annotations(photo_id: int):  # type: ignore[no-untyped-def]
    """Replace the photo's verified set with the full set sent (repeating it adds nothing)."""
    session = db()
    photo = _photo(photo_id)
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_body", "send a JSON body (Content-Type: application/json)")
    try:
        boxes, no_litter = parse_set(body, photo.width, photo.height, allowed_labels(session))
    except AnnotationError as exc:
        raise ApiError(400, exc.code, str(exc)) from None
    key = current_api_key()
    assert key is not None  # require_scope let the request through
    row, created = save_set(session, photo, boxes, no_litter, key)
    if created:
        logger.info(
            "photo %s: verified set %s by %s (%d boxes)", photo.id, row.id, key.name, len(boxes)
        )
    return jsonify({**set_json(row), "photo_id": photo.id, "created": created})
