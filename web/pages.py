"""The HTML pages: the debris map and the phone upload page (scripts built from frontend/)."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for

from trashmap.taxonomy import supercategories

bp = Blueprint("pages", __name__)


@bp.get("/")
def home():  # type: ignore[no-untyped-def]
    return redirect(url_for("pages.map_page"))


@bp.get("/map")
def map_page():  # type: ignore[no-untyped-def]
    """Detections on a Leaflet map with filters, a legend and photo popups."""
    return render_template("map.html", page="map", supercategories=supercategories())


@bp.get("/upload")
def upload_page():  # type: ignore[no-untyped-def]
    """Several photos at once from a phone: drag-and-drop, picker or camera."""
    return render_template("upload.html", page="upload")
