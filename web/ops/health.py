"""Liveness and readiness: GET /healthz answers 200 only when the database and broker do."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text

from web.context import services

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


def _database_ok() -> bool:
    try:
        with services().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        logger.warning("health: database unreachable: %s", exc)
        return False
    return True


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    checks = {
        "database": "ok" if _database_ok() else "unavailable",
        "broker": "ok" if services().queue.ping() else "unavailable",
    }
    healthy = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if healthy else "unavailable", **checks}), (
        200 if healthy else 503
    )
