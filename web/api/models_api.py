"""GET /api/v1/models/compare?a=A&b=B (scope read:stats): two versions on the verified photos.

pycocotools is imported only when a comparison runs (trashmap.scoring).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from web.auth import require_scope
from web.context import db
from web.errors import ApiError

bp = Blueprint("models_api", __name__)


@bp.get("/models/compare")
@require_scope("read:stats")
def compare_models():  # type: ignore[no-untyped-def]
    """COCO mAP, mAP50, per-class AP and detection counts of versions a and b."""
    from trashmap.scoring import ScoringError, compare, compare_json
    from trashmap.versions import VersionError, find_version

    unknown = sorted(set(request.args) - {"a", "b"})
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
    refs = {}
    for name in ("a", "b"):
        ref = request.args.get(name, "")
        if not ref:
            raise ApiError(
                400,
                f"invalid_{name}",
                f"{name} must name a model version (id, NAME:VERSION or a unique version)",
            )
        if "\x00" in ref:  # PostgreSQL text cannot hold NUL; no version name contains one
            raise ApiError(400, f"invalid_{name}", f"{name} contains a NUL character")
        refs[name] = ref
    session = db()
    try:
        a, b = find_version(session, refs["a"]), find_version(session, refs["b"])
    except VersionError as exc:
        raise ApiError(404, "unknown_model_version", str(exc)) from None
    try:
        result = compare(session, a, b)
    except ScoringError as exc:
        raise ApiError(422, "nothing_to_compare", str(exc)) from None
    return jsonify(compare_json(result))
