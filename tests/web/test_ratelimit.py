"""Rate limits answer 429 with the JSON error shape, counted per key or else per client IP."""

from __future__ import annotations

import uuid
from dataclasses import replace

from tests.web.conftest import make_token
from web import create_app


def test_public_reads_get_429_past_the_limit(pg_settings, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    # A queue name of its own gives this app fresh counters in the shared Redis.
    settings = replace(
        pg_settings,
        rate_limit_enabled=True,
        rate_limit_read="3/minute",
        queue_name=f"trashmap.test.{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        answers = [client.get("/api/v1/detections") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        body = answers[-1].get_json()
        assert body["error"]["code"] == "too_many_requests"
        assert "Retry-After" in answers[-1].headers
        assert answers[0].headers["X-RateLimit-Limit"] == "3"
        # Another address has its own budget; a staff key is counted apart from its IP.
        other = client.get("/api/v1/detections", environ_base={"REMOTE_ADDR": "10.0.0.9"})
        assert other.status_code == 200
        token = make_token(pg_sessions, "export")
        keyed = client.get("/api/v1/detections", headers={"X-API-Key": token})
        assert keyed.status_code == 200
        assert client.get("/healthz").status_code != 429  # not under /api/
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_uploads_have_their_own_limit(pg_settings) -> None:  # type: ignore[no-untyped-def]
    settings = replace(
        pg_settings,
        rate_limit_enabled=True,
        rate_limit_upload="1/minute",
        queue_name=f"trashmap.test.{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        first = client.post("/api/v1/photos", data={}, content_type="multipart/form-data")
        second = client.post("/api/v1/photos", data={}, content_type="multipart/form-data")
        assert first.status_code == 400 and second.status_code == 429
        assert client.get("/api/v1/photos").status_code == 200  # reads are unaffected
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_limits_hold_while_redis_is_down(pg_settings, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """Counters move into memory when Redis stops: still 429s, one warning, no tracebacks."""
    import logging

    from tests.reliability.servers import PrivateRedis

    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    settings = replace(
        pg_settings,
        rate_limit_enabled=True,
        rate_limit_read="5/minute",
        rate_limit_storage_url=redis_server.url,
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        assert client.get("/api/v1/detections").status_code == 200  # counted in Redis
        redis_server.stop()
        with caplog.at_level(logging.INFO):
            answers = [client.get("/api/v1/detections").status_code for _ in range(7)]
        assert answers[:5] == [200] * 5 and answers[5:] == [429, 429]
        warnings = [r for r in caplog.records if "falling back" in r.getMessage()]
        assert len(warnings) == 1
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    finally:
        redis_server.stop()
        app.extensions["trashmap"].engine.dispose()
