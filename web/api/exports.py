"""Bulk exports (staff, scope `export`): every row a filter matches, streamed as it is read.

GET /api/v1/exports/detections and /api/v1/exports/photos, `format=geojson` (default),
`csv`, `gpkg` (GeoPackage) or `fgb` (FlatGeobuf). Rows come from a server-side cursor in
batches, so memory stays flat at any size. GeoJSON and CSV leave as they are read; a
GeoPackage or FlatGeobuf is complete only at its end, so it is written batch by batch
(pyogrio, GDAL) into a temporary folder first (disk, not memory, grows with the export),
then streamed from the open file, whose name is already gone.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, request, stream_with_context
from werkzeug.wsgi import wrap_file

from trashmap.db import session_scope
from trashmap.taxonomy import supercategory_of
from web.auth import require_scope
from web.context import services
from web.query.features import CSV_COLUMNS, Kind, feature, properties_of, stream_rows
from web.query.filters import MapFilter
from web.query.listing import FORMATS, csv_cells, output_format

logger = logging.getLogger(__name__)
bp = Blueprint("exports", __name__)
FLUSH_ROWS = 500
# GDAL driver, media type and file extension of each GIS file format.
GIS_FORMATS: dict[str, tuple[str, str, str]] = {
    "gpkg": ("GPKG", "application/geopackage+sqlite3", "gpkg"),
    "fgb": ("FlatGeobuf", "application/flatgeobuf", "fgb"),
}
EXPORT_FORMATS = (*FORMATS, *GIS_FORMATS)
GIS_BATCH_ROWS = 5000
CHUNK_BYTES = 1 << 20
# The typed fields of a GIS export (the geometry holds lon/lat); taken_at is a DateTime
# field in the camera's wall-clock time, taken_at_offset its UTC offset when known.
GIS_FIELDS: dict[Kind, list[tuple[str, str]]] = {
    "detections": [
        ("id", "int64"),
        ("photo_id", "int32"),
        ("label", "object"),
        ("supercategory", "object"),
        ("score", "float64"),
        ("box_x1", "float64"),
        ("box_y1", "float64"),
        ("box_x2", "float64"),
        ("box_y2", "float64"),
        ("model_version", "object"),
        ("taken_at", "datetime64[ms]"),
        ("taken_at_offset", "object"),
    ],
    "photos": [
        ("id", "int32"),
        ("status", "object"),
        ("taken_at", "datetime64[ms]"),
        ("taken_at_offset", "object"),
        ("width", "int32"),
        ("height", "int32"),
        ("detections", "int32"),
    ],
}


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


def gis_values(kind: Kind, row: Any) -> list[Any]:
    """One row's GIS_FIELDS values, in order."""
    if kind == "detections":
        return [
            row.id,
            row.photo_id,
            row.label,
            supercategory_of(row.label),
            round(row.score, 5),
            round(row.x1, 2),
            round(row.y1, 2),
            round(row.x2, 2),
            round(row.y2, 2),
            f"{row.model_name}:{row.model_ver}",
            row.taken_at,
            row.taken_at_offset,
        ]
    return [
        row.id,
        row.status,
        row.taken_at,
        row.taken_at_offset,
        row.width,
        row.height,
        row.detections,
    ]


def write_gis_batch(path: str, driver: str, kind: Kind, rows: Sequence[Any], append: bool) -> None:
    """Write (or append) rows as WGS84 points into the layer named `kind`."""
    from pyogrio.raw import write  # GDAL loads only when a GIS export is asked for

    geometry = np.array(
        [struct.pack("<BIdd", 1, 1, row.lon, row.lat) for row in rows],  # WKB Point, LE
        dtype=object,
    )
    values = [gis_values(kind, row) for row in rows]
    columns = []
    for index, (_name, dtype) in enumerate(GIS_FIELDS[kind]):
        column = [v[index] for v in values]
        if dtype.startswith("datetime64"):
            column = [np.datetime64("NaT") if v is None else v for v in column]
        columns.append(np.array(column, dtype=dtype))
    write(
        path,
        geometry,
        columns,
        [name for name, _ in GIS_FIELDS[kind]],
        layer=kind,
        driver=driver,
        geometry_type="Point",
        crs="EPSG:4326",
        append=append,
    )


def write_gis_file(kind: Kind, flt: MapFilter, path: str, driver: str) -> int:
    """Every matching row into a new file at `path`; returns the count.

    Rows go into a GeoPackage GIS_BATCH_ROWS at a time (appending to one is cheap). A
    FlatGeobuf is rewritten whole on every append, so it is made from that GeoPackage in
    one pass, streamed by GDAL as Arrow batches: memory stays flat either way.
    """
    if driver != "GPKG":
        scratch = os.path.splitext(path)[0] + ".scratch.gpkg"
        count = write_gis_file(kind, flt, scratch, "GPKG")
        from pyogrio.raw import open_arrow, write_arrow

        with open_arrow(scratch, use_pyarrow=False, batch_size=GIS_BATCH_ROWS) as (meta, stream):
            write_arrow(
                stream,
                path,
                layer=kind,
                driver=driver,
                geometry_name=meta["geometry_name"],
                geometry_type="Point",
                crs="EPSG:4326",
            )
        os.remove(scratch)
        return count
    written = 0
    batch: list[Any] = []
    with session_scope(services().sessions) as session:
        for row in stream_rows(session, kind, flt):
            batch.append(row)
            if len(batch) >= GIS_BATCH_ROWS:
                write_gis_batch(path, driver, kind, batch, append=written > 0)
                written += len(batch)
                batch.clear()
    if batch or not written:  # an empty export is still a file with its (empty) layer
        write_gis_batch(path, driver, kind, batch, append=written > 0)
        written += len(batch)
    return written


def gis_response(kind: Kind, flt: MapFilter, fmt: str) -> Response:
    driver, mimetype, extension = GIS_FORMATS[fmt]
    folder = tempfile.mkdtemp(prefix="trashmap-export-")
    try:
        path = os.path.join(folder, f"{kind}.{extension}")
        count = write_gis_file(kind, flt, path, driver)
        # The open file outlives its name: nothing is left on disk however the answer ends.
        fh = open(path, "rb")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    size = os.fstat(fh.fileno()).st_size
    logger.info("export: %d %s as %s (%d bytes)", count, kind, driver, size)
    response = Response(
        wrap_file(request.environ, fh, CHUNK_BYTES), mimetype=mimetype, direct_passthrough=True
    )
    response.headers["Content-Length"] = str(size)
    response.headers["Content-Disposition"] = f'attachment; filename="{kind}.{extension}"'
    return response


def export_response(kind: Kind) -> Response:
    flt = MapFilter.from_args(request.args)  # a bad filter answers 400 before streaming
    fmt = output_format(EXPORT_FORMATS)
    if fmt in GIS_FORMATS:
        return gis_response(kind, flt, fmt)
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
