"""OGC API - Features at /ogc, what QGIS, ArcGIS and GDAL read natively: Part 1 (Core, GeoJSON)
and Part 2 for the two axis orders of WGS84 (CRS84 lon/lat, EPSG:4326 lat/lon).

Collections `detections` and `photos` are the same rows, filters and keyset pages as
GET /api/v1/detections and /photos (web.query.features); this module only speaks the
standard's vocabulary: `datetime` for since/until, `limit` 1-10 000 (default 10),
absolute `self`/`next`/`prev` links, `numberMatched`/`numberReturned`, and one feature at
/items/{featureId}.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, request
from werkzeug.datastructures import MultiDict

from trashmap.models import Detection, Photo
from trashmap.taxonomy import supercategories
from web.context import db
from web.errors import ApiError
from web.query.features import Kind, base_select, feature, fetch_page, is_postgis
from web.query.filters import FILTER_PARAMS, STATUSES, MapFilter, reject_empty
from web.query.links import public_link
from web.query.listing import MAX_LIMIT
from web.query.params import int_param
from web.query.serialize import json_response

bp = Blueprint("ogc", __name__)

JSON = "application/json"
GEOJSON = "application/geo+json"
SCHEMA_JSON = "application/schema+json"
# Plain JSON: GDAL refuses a service-desc answered as application/vnd.oai.openapi+json;version=3.1.
OPENAPI_JSON = JSON
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG4326 = "http://www.opengis.net/def/crs/EPSG/0/4326"
# Part 2: the same WGS84 points in either axis order; CRS84 is lon/lat, EPSG:4326 lat/lon.
CRSS = (CRS84, EPSG4326)
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
]
OGC_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
DEFAULT_LIMIT = 10
FEATURE_ID_MAX = 2**63 - 1

TITLES: dict[Kind, tuple[str, str]] = {
    "detections": (
        "Litter detections",
        "One point per detected object (at its photo's position): label, TACO "
        "supercategory, score, box in the upright photo's pixels, model version, time taken.",
    ),
    "photos": (
        "Photo points",
        "Every positioned photo, with or without detections: status, time taken, size and "
        "the number of detections of the model version that last processed it.",
    ),
}
# The query parameters each collection's items accept, besides `f` (everything else is a
# 400, as the standard asks): the map filters less since/until, which `datetime` replaces.
_MAP_FILTERS = tuple(name for name in FILTER_PARAMS if name not in ("since", "until"))
ITEM_PARAMS: dict[Kind, tuple[str, ...]] = {
    "detections": ("limit", "cursor", "datetime", "crs", "bbox-crs", *_MAP_FILTERS),
    "photos": ("limit", "cursor", "datetime", "crs", "bbox-crs", *_MAP_FILTERS, "status"),
}


def _collection_kind(collection_id: str) -> Kind:
    if collection_id == "detections":
        return "detections"
    if collection_id == "photos":
        return "photos"
    raise ApiError(404, "not_found", f"no collection {collection_id!r}; see /ogc/collections")


def _link(path: str, rel: str, mimetype: str, title: str) -> dict[str, str]:
    """A link object with an absolute href (OGC clients resolve no relative ones)."""
    href = public_link(path, from_request=True)
    return {"href": href, "rel": rel, "type": mimetype, "title": title}


def _check_params(allowed: tuple[str, ...], formats: tuple[str, ...]) -> None:
    """Unknown parameters are a 400 (OGC /req/core/query-param-unknown); `f` picks JSON."""
    unknown = sorted(set(request.args) - set(allowed) - {"f"})
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter(s): {', '.join(unknown)}; this one takes "
            f"{', '.join(allowed) or 'none'}",
        )
    fmt = request.args.get("f")
    if fmt is not None and fmt not in formats:
        raise ApiError(400, "invalid_f", f"f must be one of {', '.join(formats)}")


@bp.get("")
@bp.get("/")
def landing_page():  # type: ignore[no-untyped-def]
    """The landing page: links to the API description, conformance and collections."""
    _check_params((), ("json",))
    return json_response(
        {
            "title": "trashmap",
            "description": "Where litter was photographed, what kind, and when, as OGC API "
            "- Features collections.",
            "links": [
                _link("/ogc", "self", JSON, "this document"),
                _link("/ogc/api", "service-desc", OPENAPI_JSON, "API definition"),
                _link("/api/docs", "service-doc", "text/html", "API documentation"),
                _link("/ogc/conformance", "conformance", JSON, "conformance classes"),
                _link("/ogc/conformance", OGC_REL + "conformance", JSON, "conformance classes"),
                _link("/ogc/collections", "data", JSON, "collections"),
                _link("/ogc/collections", OGC_REL + "data", JSON, "collections"),
            ],
        }
    )


@bp.get("/api")
def api_definition():  # type: ignore[no-untyped-def]
    """The OpenAPI definition of these routes, relative to /ogc."""
    from web.api.openapi import build_ogc_spec  # it imports this module's constants

    _check_params((), ("json",))
    return json_response(build_ogc_spec(public_link("/ogc", from_request=True)), OPENAPI_JSON)


@bp.get("/conformance")
def conformance():  # type: ignore[no-untyped-def]
    """The conformance classes this API implements."""
    _check_params((), ("json",))
    return json_response({"conformsTo": CONFORMANCE})


@bp.get("/collections")
def collections():  # type: ignore[no-untyped-def]
    """Both collections with their extents."""
    _check_params((), ("json",))
    return json_response(
        {
            "links": [_link("/ogc/collections", "self", JSON, "this document")],
            "collections": [collection_json(kind) for kind in ("detections", "photos")],
        }
    )


@bp.get("/collections/<collection_id>")
def collection(collection_id: str):  # type: ignore[no-untyped-def]
    """One collection: title, extent, item type, links to its items and queryables."""
    kind = _collection_kind(collection_id)
    _check_params((), ("json",))
    return json_response(collection_json(kind))


def collection_json(kind: Kind) -> dict[str, Any]:
    title, description = TITLES[kind]
    base = f"/ogc/collections/{kind}"
    return {
        "id": kind,
        "title": title,
        "description": description,
        "itemType": "feature",
        "crs": list(CRSS),
        "storageCrs": CRS84,
        "extent": extent(kind),
        "links": [
            _link(base, "self", JSON, "this collection"),
            _link(f"{base}/items", "items", GEOJSON, f"{kind} as GeoJSON"),
            _link(f"{base}/queryables", OGC_REL + "queryables", SCHEMA_JSON, "queryables"),
        ],
    }


def extent(kind: Kind) -> dict[str, Any]:
    """The lon/lat box and the taken_at interval of the collection's rows, from the data."""
    d, p = Detection.__table__.c, Photo.__table__.c
    source: sa.FromClause
    if kind == "detections":
        lon, lat = d.lon, d.lat
        source = Detection.__table__.join(Photo.__table__, d.photo_id == p.id)
    else:
        lon, lat, source = p.lon, p.lat, Photo.__table__
    row = (
        db()
        .execute(
            sa.select(
                sa.func.min(lon),
                sa.func.min(lat),
                sa.func.max(lon),
                sa.func.max(lat),
                sa.func.min(p.taken_at),
                sa.func.max(p.taken_at),
            )
            .select_from(source)
            .where(lat.is_not(None), lon.is_not(None))
        )
        .one()
    )
    min_lon, min_lat, max_lon, max_lat, first, last = row
    box = [-180.0, -90.0, 180.0, 90.0] if min_lon is None else [min_lon, min_lat, max_lon, max_lat]
    return {
        "spatial": {"bbox": [box], "crs": CRS84},
        # taken_at is the camera's wall-clock time; the `datetime` filter compares it as is.
        "temporal": {"interval": [[_rfc3339(first), _rfc3339(last)]], "trs": GREGORIAN},
    }


def _rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


@bp.get("/collections/<collection_id>/queryables")
def queryables(collection_id: str):  # type: ignore[no-untyped-def]
    """The properties the items can be filtered on, as a JSON Schema."""
    kind = _collection_kind(collection_id)
    _check_params((), ("json",))
    number = {"type": "number", "minimum": 0, "maximum": 1}
    common: dict[str, Any] = {
        "geometry": {"$ref": "https://geojson.org/schema/Point.json", "title": "position"},
        "taken_at": {
            "type": "string",
            "format": "date-time",
            "title": "time taken (camera clock); filter with `datetime`",
        },
        "label": {"type": "string", "title": "detection label; filter with `label`"},
        "supercategory": {
            "type": "string",
            "enum": supercategories(),
            "title": "TACO supercategory; filter with `supercategory`",
        },
        "score": {**number, "title": "detection score; filter with `min_score`"},
        "model_version": {
            "type": "string",
            "title": "name:version of the model; filter with `model_version`",
        },
    }
    if kind == "photos":
        common["status"] = {"type": "string", "enum": list(STATUSES), "title": "status"}
    return json_response(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": public_link(request.path, from_request=True),
            "type": "object",
            "title": TITLES[kind][0],
            "properties": common,
            "additionalProperties": False,
        },
        SCHEMA_JSON,
    )


def ogc_filter(kind: Kind) -> MapFilter:
    """The request's filters as a MapFilter: `datetime` becomes since/until."""
    reject_empty(request.args)  # `cursor=` and `datetime=` too, not only the map filters
    args: MultiDict[str, str] = MultiDict()
    for name in ITEM_PARAMS[kind]:
        if name in ("limit", "cursor", "datetime", "crs", "bbox-crs", "bbox"):
            continue
        for value in request.args.getlist(name):
            args.add(name, value)
    bbox, bbox_crs = request.args.get("bbox"), _crs("bbox-crs")
    if bbox is not None:
        args.add("bbox", bbox if bbox_crs == CRS84 else _lon_lat_order(bbox))
    raw = request.args.get("datetime")
    if raw is not None:
        since, until = datetime_bounds(raw)
        if since:
            args.add("since", since)
        if until:
            args.add("until", until)
    try:
        return MapFilter.from_args(args)
    except ApiError as exc:
        if exc.code in ("invalid_since", "invalid_until"):
            raise ApiError(
                400,
                "invalid_datetime",
                "datetime must be an RFC 3339 date or date-time, or an interval start/end "
                "with `..` for an open end (e.g. 2024-05-01/.., 2024-05-01T08:00:00Z)",
            ) from None
        raise


def _crs(name: str) -> str:
    """The `crs` or `bbox-crs` parameter (Part 2), CRS84 when absent."""
    value = request.args.get(name, CRS84)
    if value not in CRSS:
        raise ApiError(
            400, f"invalid_{name.replace('-', '_')}", f"{name} must be one of {', '.join(CRSS)}"
        )
    return value


def _lon_lat_order(bbox: str) -> str:
    """An EPSG:4326 bbox (minLat,minLon,maxLat,maxLon) in the map filter's lon/lat order."""
    parts = bbox.split(",")
    return ",".join([parts[1], parts[0], parts[3], parts[2]]) if len(parts) == 4 else bbox


def _in_crs(features: list[dict[str, Any]], crs: str) -> list[dict[str, Any]]:
    """Features as built (lon/lat), or with lat/lon coordinates for EPSG:4326."""
    if crs == EPSG4326:
        for f in features:
            lon, lat = f["geometry"]["coordinates"]
            f["geometry"]["coordinates"] = [lat, lon]
    return features


def _with_crs(response: Response, crs: str) -> Response:
    response.headers["Content-Crs"] = f"<{crs}>"
    return response


def datetime_bounds(raw: str) -> tuple[str | None, str | None]:
    """`datetime` as the map filter's inclusive since/until: an instant is both ends."""
    if "/" not in raw:
        if raw in ("", ".."):
            raise ApiError(400, "invalid_datetime", "datetime is empty")
        return raw, raw
    start, _, end = raw.partition("/")
    open_start, open_end = start in ("", ".."), end in ("", "..")
    if "/" in end or (open_start and open_end):
        raise ApiError(400, "invalid_datetime", "datetime interval needs at least one end")
    return (None if open_start else start), (None if open_end else end)


@bp.get("/collections/<collection_id>/items")
def items(collection_id: str):  # type: ignore[no-untyped-def]
    """A page of features; `next` and `prev` (absolute) carry the filters and a keyset
    cursor (the id the page starts after, or for `prev` ends before)."""
    kind = _collection_kind(collection_id)
    _check_params(ITEM_PARAMS[kind], ("json", "geojson"))
    flt = ogc_filter(kind)
    crs = _crs("crs")
    # A limit above the maximum is served as the maximum, as OGC API - Features asks.
    limit = min(int_param(request.args, "limit", 1, 2**31 - 1, DEFAULT_LIMIT), MAX_LIMIT)
    page = fetch_page(db(), kind, flt, limit, request.args.get("cursor"))
    query = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    links = [
        {
            "href": public_link(request.path, list(request.args.items(multi=True)), True),
            "rel": "self",
            "type": GEOJSON,
            "title": "this page",
        },
        _link(f"/ogc/collections/{kind}", "collection", JSON, "the collection"),
    ]
    for rel, cursor in (("next", page.next_cursor), ("prev", page.prev_cursor)):
        if cursor:
            href = public_link(request.path, [*query, ("cursor", cursor)], True)
            links.append({"href": href, "rel": rel, "type": GEOJSON, "title": f"{rel} page"})
    body = {
        "type": "FeatureCollection",
        "timeStamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "numberMatched": page.matched,
        "numberReturned": len(page.rows),
        "links": links,
        "features": _in_crs([feature(kind, row) for row in page.rows], crs),
    }
    return _with_crs(json_response(body, GEOJSON), crs)


@bp.get("/collections/<collection_id>/items/<feature_id>")
def item(collection_id: str, feature_id: str):  # type: ignore[no-untyped-def]
    """One feature of the collection by its id."""
    kind = _collection_kind(collection_id)
    _check_params(("crs",), ("json", "geojson"))
    crs = _crs("crs")
    fid = int(feature_id) if re.fullmatch(r"[0-9]{1,19}", feature_id) else -1
    if not 0 <= fid <= FEATURE_ID_MAX:
        raise ApiError(404, "not_found", f"no {kind[:-1]} with id {feature_id!r}")
    session = db()
    id_column = Detection.__table__.c.id if kind == "detections" else Photo.__table__.c.id
    row = session.execute(
        base_select(kind, MapFilter(), is_postgis(session)).where(id_column == fid)
    ).first()
    if row is None:
        raise ApiError(404, "not_found", f"no {kind[:-1]} with id {fid} in {kind}")
    body = _in_crs([feature(kind, row)], crs)[0]
    body["links"] = [
        _link(request.path, "self", GEOJSON, "this feature"),
        _link(f"/ogc/collections/{kind}", "collection", JSON, "the collection"),
    ]
    return _with_crs(json_response(body, GEOJSON), crs)
