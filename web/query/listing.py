"""The paged list answer shared by GET /detections and GET /photos: GeoJSON or CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Response, request

from web.context import db
from web.errors import ApiError
from web.query.features import CSV_COLUMNS, Kind, feature, fetch_page, properties_of
from web.query.filters import FILTER_PARAMS, MapFilter
from web.query.links import public_link
from web.query.params import int_param
from web.query.serialize import json_response

MAX_LIMIT = 10_000
FORMATS = ("geojson", "csv")
# The parameters each list reads: the only ones its `next` link carries on.
LIST_PARAMS: dict[Kind, tuple[str, ...]] = {
    "detections": (*FILTER_PARAMS, "limit", "format"),
    "photos": (*FILTER_PARAMS, "status", "limit", "format"),
}


def next_link(kind: Kind, cursor: str) -> str:
    """The request's own list parameters, with the cursor of the next page (never the
    request's Host: root-relative unless TRASHMAP_PUBLIC_URL is set)."""
    query = [(name, value) for name in LIST_PARAMS[kind] for value in request.args.getlist(name)]
    return public_link(request.path, [*query, ("cursor", cursor)])


def output_format(formats: tuple[str, ...] = FORMATS) -> str:
    fmt = request.args.get("format", "geojson")  # `format=` is a 400
    if fmt not in formats:
        raise ApiError(400, "invalid_format", f"format must be one of {', '.join(formats)}")
    return fmt


def list_response(kind: Kind) -> Response:
    """One keyset page of `kind` for the request's filters; `next` follows the cursor."""
    flt = MapFilter.from_args(request.args)
    fmt = output_format()
    limit = int_param(request.args, "limit", 1, MAX_LIMIT, 1000)
    page = fetch_page(db(), kind, flt, limit, request.args.get("cursor"))
    next_url = next_link(kind, page.next_cursor) if page.next_cursor else None
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS[kind])
        for row in page.rows:
            writer.writerow(csv_cells(properties_of(kind, row)))
        response = Response(buffer.getvalue(), mimetype="text/csv")
    else:
        response = json_response(
            {
                "type": "FeatureCollection",
                "numberMatched": page.matched,
                "numberReturned": len(page.rows),
                "next_cursor": page.next_cursor,
                "links": [{"rel": "next", "href": next_url, "type": "application/geo+json"}]
                if next_url
                else [],
                "features": [feature(kind, row) for row in page.rows],
            },
            "application/geo+json",
        )
    response.headers["X-Total-Count"] = str(page.matched)
    if next_url:
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return response


def csv_cells(properties: dict[str, Any]) -> list[Any]:
    return ["" if value is None else value for value in properties.values()]
