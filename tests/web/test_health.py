"""/healthz is liveness (the process answers), /readyz is readiness (database, broker, schema,
storage)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.reliability.servers import free_port
from web import create_app


def test_liveness_survives_a_database_and_broker_outage(pg_settings) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nothing listens there
    settings = replace(
        pg_settings,
        database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{port}/trashmap",
        broker_url=f"redis://127.0.0.1:{port}/0",
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        alive = client.get("/healthz")
        assert alive.status_code == 200 and alive.get_json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 503
        body = ready.get_json()
        assert body["database"] == "unavailable" and body["broker"] == "unavailable"
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_readiness_when_everything_is_up(client) -> None:  # type: ignore[no-untyped-def]
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["status"] == "ready" and ready.get_json()["storage"] == "ok"


def test_unwritable_storage_is_not_ready(pg_settings, pg_clean, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")  # the storage folder would have to be inside a file
    app = create_app(replace(pg_settings, storage_url=f"file://{blocker}/storage"))
    try:
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        body = ready.get_json()
        assert body["storage"] == "unavailable" and body["database"] == "ok"
    finally:
        app.extensions["trashmap"].engine.dispose()
