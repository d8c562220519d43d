"""Bulk exports (staff, scope `export`): every row a filter matches, streamed as it is read.

GET /api/v1/exports/detections and /api/v1/exports/photos, `format=geojson` (default) or
`csv`. Rows come from a server-side cursor in batches, so memory stays flat at any size.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator

import orjson
from flask import Blueprint, Response, request, stream_with_context

from trashmap.db import session_scope
from web.auth import require_scope
from web.context import services
from web.query.features import CSV_COLUMNS, Kind, feature, properties_of, stream_rows
from web.query.filters import MapFilter
from web.query.listing import csv_cells, output_format

logger = logging.getLogger(__name__)
bp = Blueprint("exports", __name__)
FLUSH_ROWS = 500


def geojson_chunks(kind: Kind, flt: MapFilter) -> Iterator[str]:
    """A FeatureCollection written feature by feature."""
    with session_scope(services().sessions) as session:
        yield '{"type":"FeatureCollection","features":['
        buffer: list[str] = []
        first = True
        for row in stream_rows(session, kind, flt):
            buffer.append(("" if first else ",") + orjson.dumps(feature(kind, row)).decode())
            first = False
            if len(buffer) >= FLUSH_ROWS:
                yield "".join(buffer)
                buffer.clear()
        yield "".join(buffer) + "]}\n"


def csv_chunks(kind: Kind, flt: MapFilter) -> Iterator[str]:
    """A header line, then one line per row, flushed every FLUSH_ROWS rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS[kind])
    with session_scope(services().sessions) as session:
        for n, row in enumerate(stream_rows(session, kind, flt), start=1):
            writer.writerow(csv_cells(properties_of(kind, row)))
            if n % FLUSH_ROWS == 0:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
    yield out.getvalue()


def export_response(kind: Kind) -> Response:
    flt = MapFilter.from_args(request.args)  # a bad filter answers 400 before streaming
    fmt = output_format()
    chunks = csv_chunks(kind, flt) if fmt == "csv" else geojson_chunks(kind, flt)
    mimetype = "text/csv" if fmt == "csv" else "application/geo+json"
    response = Response(stream_with_context(chunks), mimetype=mimetype)
    extension = "csv" if fmt == "csv" else "geojson"
    response.headers["Content-Disposition"] = f'attachment; filename="{kind}.{extension}"'
    return response


@bp.get("/exports/detections")
@require_scope("export")
def export_detections():  # type: ignore[no-untyped-def]
    """Every detection matching the filters (no limit, no paging)."""
    return export_response("detections")


@bp.get("/exports/photos")
@require_scope("export")
def export_photos():  # type: ignore[no-untyped-def]
    """Every photo point matching the filters (no limit, no paging)."""
    return export_response("photos")
