"""GET /readyz: 200 only when this process can serve: database reachable and migrated to
the newest revision, broker reachable, photo storage writable. /healthz (web/ops/health.py)
is the liveness probe.
"""

from __future__ import annotations

import functools
import logging

from flask import Blueprint, jsonify
from sqlalchemy import text

from trashmap.settings import Settings
from trashmap.storage import StorageError
from web.context import services, storage

logger = logging.getLogger(__name__)
bp = Blueprint("readiness", __name__)


@functools.cache
def _head_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    from trashmap.migrate import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config(Settings())).get_heads())


def _schema_state() -> tuple[str, str]:
    """('ok' | 'unavailable' | 'outdated', detail)."""
    try:
        with services().engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version"))
            current = {row[0] for row in rows}
    except Exception as exc:
        logger.warning("readyz: database not ready: %s", exc)
        return "unavailable", type(exc).__name__
    heads = _head_revisions()
    if current != heads:
        hint = "run `trashmap db upgrade`"
        return "outdated", f"at {sorted(current)}, newest {sorted(heads)}: {hint}"
    return "ok", ",".join(sorted(current))


def _storage_state() -> str:
    """'ok' or 'unavailable': an upload now would find somewhere to go."""
    try:
        storage().check()
    except (StorageError, ValueError) as exc:  # ValueError: an unusable TRASHMAP_STORAGE_URL
        logger.warning("readyz: storage not ready: %s", exc)
        return "unavailable"
    return "ok"


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    schema, detail = _schema_state()
    broker = "ok" if services().queue.ping() else "unavailable"
    stored = _storage_state()
    ready = schema == "ok" and broker == "ok" and stored == "ok"
    body = {
        "status": "ready" if ready else "not_ready",
        "database": schema,
        "schema": detail,
        "broker": broker,
        "storage": stored,
    }
    return jsonify(body), (200 if ready else 503)
