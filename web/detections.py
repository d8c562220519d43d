"""Detections on the map: GET /api/v1/detections as an RFC 7946 FeatureCollection."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import contains_eager

from web.context import db
from web.models import Detection, Photo
from web.params import bbox_param, float_param, int_param
from web.serialize import detection_feature

bp = Blueprint("detections", __name__)
MAX_LIMIT = 10_000


@bp.get("/detections")
def list_detections():  # type: ignore[no-untyped-def]
    """Detections that have a position, filtered by bbox, label and minimum score."""
    bbox = bbox_param(request.args)
    min_score = float_param(request.args, "min_score", 0.0, 1.0)
    limit = int_param(request.args, "limit", 1, MAX_LIMIT, 1000)
    labels = [label for label in request.args.getlist("label") if label]
    query = (
        select(Detection)
        .join(Detection.photo)
        .options(contains_eager(Detection.photo))
        .where(Detection.lat.is_not(None), Detection.lon.is_not(None))
        .order_by(Detection.id)
        .limit(limit)
    )
    if bbox is not None:
        min_lon, min_lat, max_lon, max_lat = bbox
        query = query.where(
            Detection.lon.between(min_lon, max_lon), Detection.lat.between(min_lat, max_lat)
        )
    if labels:
        query = query.where(Detection.label.in_(labels))
    if min_score is not None:
        query = query.where(Detection.score >= min_score)
    features = [detection_feature(det, det.photo) for det in db().scalars(query)]
    return jsonify({"type": "FeatureCollection", "features": features})
