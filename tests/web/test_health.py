"""/healthz is liveness (the process answers), /readyz is readiness (database, broker, schema)."""

from __future__ import annotations

from dataclasses import replace

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
    assert ready.get_json()["status"] == "ready"
