"""The HTML pages: the debris map and the phone upload page (scripts built from frontend/)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from sqlalchemy import select

from trashmap.annotations import allowed_labels
from trashmap.models import ModelVersion
from trashmap.taxonomy import label_supercategories, supercategories
from web.context import db

bp = Blueprint("pages", __name__)


@bp.get("/")
def home():  # type: ignore[no-untyped-def]
    return redirect(url_for("pages.map_page"))


@bp.get("/map")
def map_page():  # type: ignore[no-untyped-def]
    """Detections on a MapLibre map (vector tiles) with filters, a legend and photo popups."""
    # The page warns when it shows detections of these random detectors.
    untrained = [row.label for row in db().scalars(select(ModelVersion)) if row.untrained]
    return render_template(
        "map.html",
        page="map",
        supercategories=supercategories(),
        untrained_models=untrained,
        # Points are coloured by supercategory; tiles carry only the label.
        label_kinds=label_supercategories(),
    )


@bp.get("/review")
def review_page():  # type: ignore[no-untyped-def]
    """Staff review: the queue, the model's boxes over the photo, edit and save (scope review).

    The page holds no data itself: it signs in with an API key kept in the browser's storage.
    """
    labels = sorted(allowed_labels(db()))
    return render_template("review.html", page="review", labels=labels)


@bp.get("/upload")
def upload_page():  # type: ignore[no-untyped-def]
    """Several photos at once from a phone: drag-and-drop, picker or camera."""
    return render_template("upload.html", page="upload")
