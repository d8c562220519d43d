"""Model versions (scope read:stats): GET /api/v1/models lists them with their model cards;
GET /api/v1/models/compare?a=A&b=B scores two on the verified photos.

pycocotools is imported only when a comparison runs (trashmap.scoring).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from trashmap.models import ModelVersion
from web.auth import require_scope
from web.context import db
from web.errors import ApiError

bp = Blueprint("models_api", __name__)


def version_json(row: ModelVersion) -> dict[str, Any]:
    """One version as the API serves it; `card` is None for checkpoints without a card."""
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "arch": row.arch,
        "active": row.active,
        "untrained": row.untrained,
        "created_at": row.created_at.isoformat(),
        "weights_sha256": row.weights_sha256,
        "class_names": list(row.class_names),
        "card": row.card,
    }


@bp.get("/models")
@require_scope("read:stats")
def list_models():  # type: ignore[no-untyped-def]
    """Every registered model version, oldest first, with its model card.

    No detection counts: counting them scans the detections table (`trashmap models list`).
    """
    from trashmap.versions import list_versions

    if request.args:
        raise ApiError(
            400, "unknown_parameter", f"unknown parameter(s): {', '.join(sorted(request.args))}"
        )
    return jsonify({"versions": [version_json(r) for r in list_versions(db())]})


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
