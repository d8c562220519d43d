"""GET /healthz, the liveness probe: 200 whenever this process can answer at all.

It touches neither the database nor the broker: an outage of either must not make the
orchestrator restart every web container (readiness, GET /readyz, reports those).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})
