"""OpenAPI 3 description of the API (GET /api/v1/openapi.json) and its docs page (/api/docs).

Written out by hand next to the views it describes; tests/web/test_openapi.py runs
schemathesis against the live app so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template

from trashmap.taxonomy import supercategories
from web.api.detections import MAX_LIMIT
from web.api.grid import MIN_CELL_DEG
from web.api.photo_image import MAX_SIDE
from web.api.stats import PERIODS
from web.api.tiles import MAX_ZOOM
from web.query.filters import MAX_RADIUS_M, STATUSES

bp = Blueprint("openapi", __name__)
PHOTO_ID_MAX = 2**31 - 1
JSON = "application/json"
GEOJSON = "application/geo+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _filter_parameters() -> list[dict[str, Any]]:
    text = {"type": "string"}
    return [
        _query("bbox", text, "minLon,minLat,maxLon,maxLat in WGS84 degrees"),
        _query("near", text, "lat,lon of a circle's centre; needs radius_m"),
        _query(
            "radius_m",
            {"type": "number", "minimum": 0, "maximum": MAX_RADIUS_M},
            "radius of the `near` circle in metres",
        ),
        _query(
            "label",
            {"type": "array", "items": text},
            "detection label; repeat for several",
            style="form",
            explode=True,
        ),
        _query(
            "supercategory",
            {"type": "string", "enum": supercategories()},
            "TACO supercategory of the label",
        ),
        _query("min_score", {"type": "number", "minimum": 0, "maximum": 1}, "lowest score"),
        _query("since", text, "taken on or after (ISO 8601 date or datetime, camera time)"),
        _query("until", text, "taken before the end of this date, or at/before this datetime"),
        _query("model_version", text, "name:version of the model that found the detections"),
    ]


def _list_parameters(kind: str) -> list[dict[str, Any]]:
    params = _filter_parameters() + [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 1000},
            "features per page",
        ),
        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        _query(
            "format",
            {"type": "string", "enum": ["geojson", "csv"], "default": "geojson"},
            "GeoJSON (RFC 7946) or CSV",
        ),
    ]
    if kind == "photos":
        params.append(
            _query(
                "status",
                {"type": "array", "items": {"type": "string", "enum": list(STATUSES)}},
                "processing status; repeat for several",
                style="form",
                explode=True,
            )
        )
    return params


def _collection(description: str, item: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            GEOJSON: {
                "schema": {
                    "allOf": [
                        _ref("FeatureCollection"),
                        {"properties": {"features": {"type": "array", "items": _ref(item)}}},
                    ]
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }


def _common_errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "a parameter is invalid (the message names it)",
        401: "no API key, or an unknown or revoked one",
        403: "the API key lacks the scope this endpoint needs",
        404: "no such photo",
        429: "rate limit exceeded (see Retry-After)",
        501: "not available on this database",
        503: "the database is unavailable",
    }
    return {str(code): _error(texts[code]) for code in codes}


def _operations() -> dict[str, Any]:
    photo_id = _path(
        "photo_id", {"type": "integer", "minimum": 0, "maximum": PHOTO_ID_MAX}, "photo id"
    )
    staff: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
    return {
        "/api/v1/detections": {
            "get": {
                "summary": "Detections as GeoJSON or CSV, filtered and keyset-paged",
                "operationId": "listDetections",
                "parameters": _list_parameters("detections"),
                "responses": {
                    "200": _collection("a page of detections", "DetectionFeature"),
                    **_common_errors(400, 429, 503),
                },
            }
        },
        "/api/v1/photos": {
            "post": {
                "summary": "Upload one photo (public, rate-limited); detection runs later",
                "operationId": "uploadPhoto",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                                    "lon": {"type": "number", "minimum": -180, "maximum": 180},
                                    "taken_at": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "stored and queued",
                        "content": {JSON: {"schema": _ref("Upload")}},
                    },
                    "200": {
                        "description": "the same bytes were uploaded before",
                        "content": {JSON: {"schema": _ref("Upload")}},
                    },
                    **_common_errors(400, 429, 503),
                    "413": _error("over the upload size limit"),
                    "415": _error("not an image, or an unsupported format"),
                    "422": _error("an image that cannot be decoded"),
                },
            },
            "get": {
                "summary": "Photo points (with or without detections), filtered and keyset-paged",
                "operationId": "listPhotos",
                "parameters": _list_parameters("photos"),
                "responses": {
                    "200": _collection("a page of photos", "PhotoFeature"),
                    **_common_errors(400, 429, 503),
                },
            },
        },
        "/api/v1/photos/{photo_id}": {
            "get": {
                "summary": "One photo, its status and detections",
                "operationId": "getPhoto",
                "parameters": [photo_id],
                "responses": {
                    "200": {
                        "description": "the photo",
                        "content": {JSON: {"schema": _ref("Photo")}},
                    },
                    **_common_errors(404, 429, 503),
                },
            },
            "delete": {
                "summary": "Delete a photo with its detections (scope write)",
                "operationId": "deletePhoto",
                "security": staff,
                "parameters": [photo_id],
                "responses": {
                    "204": {"description": "deleted"},
                    **_common_errors(401, 403, 404, 429, 503),
                },
            },
        },
        "/api/v1/photos/{photo_id}/image": {
            "get": {
                "summary": "The photo re-encoded as JPEG without EXIF/GPS; max_size for thumbnails",
                "operationId": "photoImage",
                "parameters": [
                    photo_id,
                    _query(
                        "max_size",
                        {"type": "integer", "minimum": 16, "maximum": MAX_SIDE},
                        "longest side in pixels",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "JPEG",
                        "content": {
                            "image/jpeg": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                    **_common_errors(400, 404, 429, 503),
                },
            }
        },
        "/api/v1/grid": {
            "get": {
                "summary": "Detection counts per lon/lat cell (heat maps)",
                "operationId": "grid",
                "parameters": _filter_parameters()
                + [
                    _query(
                        "cell",
                        {"type": "number", "minimum": MIN_CELL_DEG, "maximum": 90},
                        "cell size in degrees (or give zoom)",
                    ),
                    _query(
                        "zoom",
                        {"type": "integer", "minimum": 0, "maximum": 24, "default": 2},
                        "web-map zoom; the cell is an eighth of a tile",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "cells with counts",
                        "content": {JSON: {"schema": _ref("Grid")}},
                    },
                    **_common_errors(400, 429, 503),
                },
            }
        },
        "/api/v1/tiles/{z}/{x}/{y}.mvt": {
            "get": {
                "summary": "Mapbox vector tile of detections (layer `detections`), clustered below "
                "zoom 14",
                "operationId": "tile",
                "parameters": [
                    _path("z", {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM}, "zoom"),
                    _path("x", {"type": "integer", "minimum": 0}, "tile column"),
                    _path("y", {"type": "integer", "minimum": 0}, "tile row"),
                    *_filter_parameters(),
                ],
                "responses": {
                    "200": {
                        "description": "the tile (empty when nothing matches)",
                        "content": {
                            "application/vnd.mapbox-vector-tile": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    **_common_errors(400, 429, 501, 503),
                },
            }
        },
        "/api/v1/stats": {
            "get": {
                "summary": "Totals, counts by label, supercategory and period (scope read:stats)",
                "operationId": "stats",
                "security": staff,
                "parameters": _filter_parameters()
                + [
                    _query(
                        "period",
                        {"type": "string", "enum": list(PERIODS), "default": "day"},
                        "bucket of by_period",
                    )
                ],
                "responses": {
                    "200": {
                        "description": "statistics",
                        "content": {JSON: {"schema": _ref("Stats")}},
                    },
                    **_common_errors(400, 401, 403, 429, 503),
                },
            }
        },
        **{
            f"/api/v1/exports/{kind}": {
                "get": {
                    "summary": f"Every matching {kind[:-1]}, streamed (scope export)",
                    "operationId": f"export{kind.title()}",
                    "security": staff,
                    "parameters": _filter_parameters()
                    + [
                        _query(
                            "format",
                            {"type": "string", "enum": ["geojson", "csv"], "default": "geojson"},
                            "GeoJSON or CSV",
                        )
                    ]
                    + ([_list_parameters("photos")[-1]] if kind == "photos" else []),
                    "responses": {
                        "200": _collection(
                            f"all matching {kind}",
                            "DetectionFeature" if kind == "detections" else "PhotoFeature",
                        ),
                        **_common_errors(400, 401, 403, 429, 503),
                    },
                }
            }
            for kind in ("detections", "photos")
        },
    }


def _schemas() -> dict[str, Any]:
    num, text, integer = {"type": "number"}, {"type": "string"}, {"type": "integer"}
    nullable_text = {"type": ["string", "null"]}
    location = {"type": ["object", "null"], "properties": {"lat": num, "lon": num}}
    point = {
        "type": "object",
        "required": ["type", "coordinates"],
        "properties": {
            "type": {"const": "Point"},
            "coordinates": {"type": "array", "minItems": 2, "maxItems": 2, "items": num},
        },
    }

    def feature(properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["type", "geometry", "properties"],
            "properties": {
                "type": {"const": "Feature"},
                "id": integer,
                "bbox": {"type": "array"},
                "geometry": point,
                "properties": {"type": "object", "properties": properties},
            },
        }

    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": text, "message": text},
                }
            },
        },
        "FeatureCollection": {
            "type": "object",
            "required": ["type", "features"],
            "properties": {
                "type": {"const": "FeatureCollection"},
                "features": {"type": "array"},
                "numberMatched": integer,
                "numberReturned": integer,
                "next_cursor": nullable_text,
                "links": {"type": "array"},
            },
        },
        "DetectionFeature": feature(
            {
                "photo_id": integer,
                "label": text,
                "supercategory": nullable_text,
                "score": num,
                "bbox": {"type": "array", "items": num, "minItems": 4, "maxItems": 4},
                "model_version": text,
                "taken_at": nullable_text,
            }
        ),
        "PhotoFeature": feature(
            {
                "status": {"enum": list(STATUSES)},
                "taken_at": nullable_text,
                "width": integer,
                "height": integer,
                "detections": integer,
            }
        ),
        "Upload": {
            "type": "object",
            "required": ["id", "status", "location", "warnings"],
            "properties": {
                "id": integer,
                "status": text,
                "location": location,
                "warnings": {"type": "array", "items": text},
            },
        },
        "Photo": {
            "type": "object",
            "required": ["id", "status", "location", "detections"],
            "properties": {
                "id": integer,
                "status": {"enum": list(STATUSES)},
                "location": location,
                "taken_at": nullable_text,
                "detections": {"type": "array"},
            },
        },
        "Grid": {
            "allOf": [
                _ref("FeatureCollection"),
                {
                    "type": "object",
                    "required": ["cell_deg", "total"],
                    "properties": {"cell_deg": num, "total": integer},
                },
            ]
        },
        "Stats": {
            "type": "object",
            "required": ["detections", "photos", "by_label", "by_supercategory", "by_period"],
            "properties": {
                "detections": integer,
                "photos": integer,
                "by_label": {"type": "array"},
                "by_supercategory": {"type": "array"},
                "by_period": {"type": "object"},
            },
        },
    }


def build_spec() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trashmap map API",
            "version": "1",
            "description": "Where litter was photographed, what kind, and when. Public "
            "endpoints are rate-limited per API key or client IP; staff "
            "endpoints need an API key with the named scope.",
        },
        "paths": _operations(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


@bp.get("/api/v1/openapi.json")
def openapi_json():  # type: ignore[no-untyped-def]
    return jsonify(build_spec())


@bp.get("/api/docs")
def api_docs():  # type: ignore[no-untyped-def]
    """Swagger UI (bundled from npm into web/static) reading /api/v1/openapi.json."""
    return render_template("api_docs.html")
