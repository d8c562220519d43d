"""GET /api/v1/exports/coco (scope `export`): the verified training set as a streamed zip.

The zip holds annotations.json (COCO, boxes xywh) and images/<photo id>.jpg, upright and
without metadata (trashmap.dataset builds both, as `trashmap dataset export` does).
"""

from __future__ import annotations

from flask import Blueprint, Response, request, stream_with_context

from trashmap.dataset import DatasetError, DatasetFilter, shipped_class_set, zip_chunks
from trashmap.db import session_scope
from web.auth import require_scope
from web.context import services, storage
from web.errors import ApiError
from web.query.filters import MapFilter

bp = Blueprint("coco_export", __name__)
PARAMS = ("since", "until", "bbox", "label", "classes")


def dataset_filter() -> DatasetFilter:
    """The query string as a DatasetFilter (the map API's spellings), or a 400."""
    unknown = sorted(set(request.args) - set(PARAMS))
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
    args = request.args.copy()
    classes = args.pop("classes", None)
    flt = MapFilter.from_args(args)  # parses since, until, bbox and label the same way
    return DatasetFilter(
        since=flt.since,
        until=flt.until,
        bbox=flt.bbox,
        labels=flt.labels,
        classes=classes,
    )


@bp.get("/exports/coco")
@require_scope("export")
def export_coco():  # type: ignore[no-untyped-def]
    """Every verified photo matching the filters, as annotations.json + images/ in a zip."""
    flt = dataset_filter()
    if flt.classes is not None:
        try:  # an unknown class set is a 400 before any byte is sent
            shipped_class_set(flt.classes)
        except DatasetError as exc:
            raise ApiError(400, "invalid_classes", str(exc)) from None

    store = storage()

    def chunks():  # type: ignore[no-untyped-def]
        with session_scope(services().sessions) as session:
            yield from zip_chunks(session, flt, store)

    response = Response(stream_with_context(chunks()), mimetype="application/zip")
    response.headers["Content-Disposition"] = 'attachment; filename="trashmap-coco.zip"'
    return response
