"""OpenAPI 3 description of the API (GET /api/v1/openapi.json) and its docs page (/api/docs).

Written out by hand next to the views it describes; tests/web/test_openapi.py runs
schemathesis against the live app so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template

from trashmap.annotations import MAX_BOXES
from trashmap.taxonomy import class_set_names, supercategories
from web.api.detections import MAX_LIMIT
from web.api.exports import EXPORT_FORMATS, GIS_FORMATS
from web.api.grid import MIN_CELL_DEG
from web.api.ogc import CRSS, DEFAULT_LIMIT
from web.api.photo_image import SIZES
from web.api.review import MAX_QUEUE, QUEUE_PARAMS
from web.api.stats import PERIODS
from web.api.tiles import MAX_ZOOM
from web.query.filters import MAX_RADIUS_M, STATUSES

bp = Blueprint("openapi", __name__)
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


# Every string parameter is non-empty: `name=` answers 400 (web.query.filters.reject_empty).
TEXT = {"type": "string", "minLength": 1}


def _filter_parameters() -> list[dict[str, Any]]:
    text = TEXT
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
        _query(
            "verified",
            {"type": "string", "enum": ["true", "false"]},
            "true: photos a reviewer verified only; false: unreviewed photos only",
        ),
    ]


def _list_parameters(kind: str) -> list[dict[str, Any]]:
    params = _filter_parameters() + [
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 1000},
            "features per page",
        ),
        _query("cursor", TEXT, "next_cursor of the previous page (of the same list)"),
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


def _with_gis_files(response: dict[str, Any]) -> dict[str, Any]:
    """An export's answer: its GeoJSON/CSV content and the GIS files (web.api.exports)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    files = {mimetype: binary for _driver, mimetype, _ext in GIS_FORMATS.values()}
    return {**response, "content": {**response["content"], **files}}


def _common_errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "a parameter is invalid (the message names it)",
        401: "no API key, or an unknown or revoked one",
        403: "the API key lacks the scope this endpoint needs",
        404: "no such photo, or a path parameter that is not a non-negative integer",
        429: "rate limit exceeded (see Retry-After)",
        501: "not available on this database",
        503: "the database is unavailable",
    }
    return {str(code): _error(texts[code]) for code in codes}


def _operations() -> dict[str, Any]:
    photo_id = _path("photo_id", {"type": "integer", "minimum": 0}, "photo id")
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
                    "422": _error(
                        "an image that cannot be used: undecodable_image, image_too_large,"
                        " image_too_small, aspect_ratio, too_many_scans, decode_budget"
                    ),
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
                        {"type": "integer", "enum": list(SIZES)},
                        f"longest side in pixels; without it {SIZES[-1]} (or the photo's own"
                        " size when smaller)",
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
                        "description": "the tile (empty when nothing matches); its ETag "
                        "changes exactly when the detections under it do",
                        "content": {
                            "application/vnd.mapbox-vector-tile": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    "304": {"description": "not modified: the If-None-Match ETag is current"},
                    **_common_errors(400, 404, 429, 501, 503),
                },
            }
        },
        "/api/v1/review/queue": {
            "get": {
                "summary": "Unreviewed done photos, most informative first (scope review)",
                "operationId": "reviewQueue",
                "security": staff,
                "parameters": [
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_QUEUE, "default": 20},
                        "most photos returned",
                    ),
                    *(p for p in _filter_parameters() if p["name"] in QUEUE_PARAMS),
                ],
                "responses": {
                    "200": {
                        "description": "photos with their detections and priority",
                        "content": {JSON: {"schema": _ref("ReviewQueue")}},
                    },
                    **_common_errors(400, 401, 403, 429, 503),
                },
            }
        },
        "/api/v1/photos/{photo_id}/annotations": {
            "get": {
                "summary": "The photo's verified set and every earlier one (scope review)",
                "operationId": "getAnnotations",
                "security": staff,
                "parameters": [photo_id],
                "responses": {
                    "200": {
                        "description": "current set (null when unreviewed) and history",
                        "content": {JSON: {"schema": _ref("Annotations")}},
                    },
                    **_common_errors(401, 403, 404, 429, 503),
                },
            },
            "put": {
                "summary": "Replace the photo's verified set with this full set (scope review)",
                "operationId": "putAnnotations",
                "security": staff,
                "parameters": [photo_id],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["annotations"],
                                "additionalProperties": False,
                                "properties": {
                                    "annotations": {
                                        "type": "array",
                                        "items": _ref("Box"),
                                        "maxItems": MAX_BOXES,
                                    },
                                    "no_litter": {"type": "boolean", "default": False},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "the stored set (created: false if it was current already)",
                        "content": {JSON: {"schema": _ref("AnnotationSet")}},
                    },
                    **_common_errors(400, 401, 403, 404, 429, 503),
                },
            },
        },
        "/api/v1/exports/coco": {
            "get": {
                "summary": "Verified photos as a COCO training set in a zip (scope export)",
                "operationId": "exportCoco",
                "security": staff,
                "parameters": [
                    p
                    for p in _filter_parameters()
                    if p["name"] in ("bbox", "label", "since", "until")
                ]
                + [
                    _query(
                        "classes",
                        {"type": "string", "enum": sorted(class_set_names())},
                        "a shipped class set: its classes are the categories",
                    )
                ],
                "responses": {
                    "200": {
                        "description": "annotations.json (COCO, xywh boxes) and images/<id>.jpg",
                        "content": {
                            "application/zip": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    **_common_errors(400, 401, 403, 429, 503),
                },
            }
        },
        "/api/v1/models": {
            "get": {
                "summary": "Registered model versions with their model cards (scope read:stats)",
                "operationId": "listModels",
                "security": staff,
                "responses": {
                    "200": {
                        "description": "every version, oldest first; card null when the "
                        "checkpoint carried none",
                        "content": {JSON: {"schema": _ref("ModelVersions")}},
                    },
                    **_common_errors(400, 401, 403, 429, 503),
                },
            }
        },
        "/api/v1/models/compare": {
            "get": {
                "summary": "Two model versions scored on verified photos (scope read:stats)",
                "operationId": "compareModels",
                "security": staff,
                "parameters": [
                    _query("a", TEXT, "version: id or name:version", required=True),
                    _query("b", TEXT, "version: id or name:version", required=True),
                ],
                "responses": {
                    "200": {
                        "description": "COCO mAP, mAP50, per-class AP, detection counts",
                        "content": {JSON: {"schema": _ref("ModelComparison")}},
                    },
                    **_common_errors(400, 401, 403, 429, 503),
                    "404": _error("no such model version"),
                    "422": _error("no verified photo was processed by both versions"),
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
                            {"type": "string", "enum": list(EXPORT_FORMATS), "default": "geojson"},
                            "GeoJSON, CSV, GeoPackage (gpkg) or FlatGeobuf (fgb)",
                        )
                    ]
                    + ([_list_parameters("photos")[-1]] if kind == "photos" else []),
                    "responses": {
                        "200": _with_gis_files(
                            _collection(
                                f"all matching {kind}",
                                "DetectionFeature" if kind == "detections" else "PhotoFeature",
                            )
                        ),
                        **_common_errors(400, 401, 403, 429, 503),
                    },
                }
            }
            for kind in ("detections", "photos")
        },
    }


def _ogc_operations() -> dict[str, Any]:
    """OGC API - Features at /ogc (web.api.ogc): metadata documents and the two collections."""
    collection_id = _path(
        "collectionId", {"type": "string", "enum": ["detections", "photos"]}, "collection"
    )
    fmt = _query("f", {"type": "string", "enum": ["json"]}, "encoding (JSON only)")
    geo_fmt = _query("f", {"type": "string", "enum": ["json", "geojson"]}, "encoding (GeoJSON)")
    not_found = _error("no such collection or feature")
    crs = _query(
        "crs",
        {"type": "string", "enum": list(CRSS), "default": CRSS[0]},
        "CRS of the answer's coordinates: CRS84 (lon/lat) or EPSG:4326 (lat/lon)",
    )

    def document(summary: str, op_id: str, params: list[Any], mimetype: str = JSON) -> Any:
        return {
            "get": {
                "summary": summary,
                "operationId": op_id,
                "parameters": params,
                "responses": {
                    "200": {"description": summary, "content": {mimetype: {"schema": {}}}},
                    **_common_errors(400, 503),
                    "404": not_found,
                },
            }
        }

    def items_parameters(kind: str) -> list[dict[str, Any]]:
        filters = [p for p in _filter_parameters() if p["name"] not in ("since", "until")]
        params = [
            collection_id,
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "features per page (a larger value is served as the maximum)",
            ),
            _query(
                "datetime",
                TEXT,
                "taken_at (camera time): an RFC 3339 date or date-time, or an interval "
                "start/end with `..` for an open end",
            ),
            _query("cursor", TEXT, "position in the list (from a `next` or `prev` link)"),
            crs,
            _query(
                "bbox-crs",
                {"type": "string", "enum": list(CRSS), "default": CRSS[0]},
                "CRS of `bbox`: CRS84 (lon/lat) or EPSG:4326 (lat/lon order)",
            ),
            geo_fmt,
            *filters,
        ]
        if kind == "photos":
            params.append(_list_parameters("photos")[-1])
        return params

    items = {
        "get": {
            "summary": "Features of a collection, filtered and paged (`next` link)",
            "operationId": "ogcItems",
            "parameters": items_parameters("photos"),
            "responses": {
                "200": {
                    "description": "a page of features",
                    "content": {GEOJSON: {"schema": _ref("FeatureCollection")}},
                },
                **_common_errors(400, 503),
                "404": not_found,
            },
        }
    }
    feature_id = _path("featureId", {"type": "string"}, "feature id")
    return {
        "/ogc": document("Landing page", "ogcLandingPage", [fmt]),
        "/ogc/api": document("This API's definition (OpenAPI)", "ogcApi", [fmt]),
        "/ogc/conformance": document("Conformance classes", "ogcConformance", [fmt]),
        "/ogc/collections": document("The collections", "ogcCollections", [fmt]),
        "/ogc/collections/{collectionId}": document(
            "One collection", "ogcCollection", [collection_id, fmt]
        ),
        "/ogc/collections/{collectionId}/queryables": document(
            "Queryable properties (JSON Schema)",
            "ogcQueryables",
            [collection_id, fmt],
            "application/schema+json",
        ),
        "/ogc/collections/{collectionId}/items": items,
        "/ogc/collections/{collectionId}/items/{featureId}": document(
            "One feature", "ogcFeature", [collection_id, feature_id, crs, geo_fmt], GEOJSON
        ),
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
                "box_x1": num,
                "box_y1": num,
                "box_x2": num,
                "box_y2": num,
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
                "review": _ref("Review"),
            },
        },
        "ReviewQueue": {
            "type": "object",
            "required": ["photos", "count"],
            "properties": {
                "count": integer,
                "photos": {
                    "type": "array",
                    "items": {
                        "allOf": [
                            _ref("Photo"),
                            {
                                "type": "object",
                                "required": ["priority"],
                                "properties": {"priority": {"type": "object"}},
                            },
                        ]
                    },
                },
            },
        },
        "Annotations": {
            "type": "object",
            "required": ["photo_id", "current", "history"],
            "properties": {
                "photo_id": integer,
                "width": integer,
                "height": integer,
                "current": {"oneOf": [_ref("AnnotationSet"), {"type": "null"}]},
                "history": {"type": "array", "items": _ref("AnnotationSet")},
            },
        },
        "ModelVersions": {
            "type": "object",
            "required": ["versions"],
            "properties": {
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "name", "version", "active", "card"],
                        "properties": {
                            "id": integer,
                            "name": text,
                            "version": text,
                            "arch": text,
                            "active": {"type": "boolean"},
                            "untrained": {"type": "boolean"},
                            "created_at": {"type": "string", "format": "date-time"},
                            "weights_sha256": nullable_text,
                            "class_names": {"type": "array", "items": text},
                            "card": {
                                "type": ["object", "null"],
                                "description": "the model card `trashmap ml train` wrote "
                                "(model, data, classes, recipe, metrics, threshold, slicing, "
                                "intended_use, limits)",
                            },
                        },
                    },
                },
            },
        },
        "ModelComparison": {
            "type": "object",
            "required": ["photos", "boxes", "versions"],
            "properties": {
                "photos": integer,
                "boxes": integer,
                "no_litter_photos": integer,
                "versions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "map", "map50", "per_class_ap", "detections"],
                        "properties": {
                            "id": integer,
                            "map": {"type": ["number", "null"]},
                            "map50": {"type": ["number", "null"]},
                            "per_class_ap": {"type": "object"},
                            "detections": integer,
                        },
                    },
                },
            },
        },
        "Review": {
            "type": "object",
            "required": ["status", "reviewed_at", "by"],
            "properties": {
                "status": {"enum": ["unreviewed", "verified"]},
                "reviewed_at": nullable_text,
                "by": nullable_text,
            },
        },
        "AnnotationSet": {
            "type": "object",
            "required": ["id", "no_litter", "annotations", "by", "reviewed_at"],
            "properties": {
                "id": integer,
                "no_litter": {"type": "boolean"},
                "annotations": {"type": "array", "items": _ref("Box")},
                "by": text,
                "reviewed_at": text,
            },
        },
        "Box": {
            "type": "object",
            "required": ["label", "bbox"],
            "additionalProperties": False,
            "properties": {
                "label": {"type": "string", "minLength": 1},
                "bbox": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": "x1, y1, x2, y2 in pixels of the upright photo",
                },
            },
        },
        "Grid": {
            "allOf": [
                _ref("FeatureCollection"),
                {
                    "type": "object",
                    "required": ["cell_deg", "total"],
                    "properties": {
                        "cell_deg": num,
                        "total": integer,
                        # The cell's edges as numbers (no `bbox` member: RFC 7946's bounds
                        # the geometry, here the cell's centre).
                        "features": {
                            "type": "array",
                            "items": feature(
                                {
                                    "count": integer,
                                    **{edge: num for edge in ("west", "south", "east", "north")},
                                }
                            ),
                        },
                    },
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
                "review": {
                    "type": "object",
                    "required": ["verified", "unreviewed"],
                    "properties": {"verified": integer, "unreviewed": integer},
                },
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
        "paths": {**_operations(), **_ogc_operations()},
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def build_ogc_spec(server_url: str) -> dict[str, Any]:
    """The OGC API's own definition (its landing page's service-desc): the /ogc routes,
    relative to `server_url`, where OGC clients look for them (GDAL reads `limit` there)."""
    spec = build_spec()
    spec["info"] = {**spec["info"], "title": "trashmap OGC API - Features"}
    spec["servers"] = [{"url": server_url}]
    spec["paths"] = {
        path.removeprefix("/ogc") or "/": ops for path, ops in _ogc_operations().items()
    }
    return spec


@bp.get("/api/v1/openapi.json")
def openapi_json():  # type: ignore[no-untyped-def]
    return jsonify(build_spec())


@bp.get("/api/docs")
def api_docs():  # type: ignore[no-untyped-def]
    """Swagger UI (bundled from npm into web/static) reading /api/v1/openapi.json."""
    return render_template("api_docs.html")
