"""API keys: the CLI makes, lists and revokes them; staff routes enforce them and their scopes."""

from __future__ import annotations

import re

import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import settings_env
from tests.web.conftest import make_token
from trashmap.cli import cli
from trashmap.models import ApiKey

# Routes anyone may call (rate-limited). Every other route must carry require_scope.
PUBLIC = {
    ("GET", "/api/v1/detections"),
    ("GET", "/api/v1/photos"),
    ("POST", "/api/v1/photos"),
    ("GET", "/api/v1/photos/<int:photo_id>"),
    ("GET", "/api/v1/photos/<int:photo_id>/image"),
    ("GET", "/api/v1/grid"),
    ("GET", "/api/v1/tiles/<int:z>/<int:x>/<int:y>.mvt"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/docs"),
    ("GET", "/ogc"),
    ("GET", "/ogc/"),
    ("GET", "/ogc/api"),
    ("GET", "/ogc/conformance"),
    ("GET", "/ogc/collections"),
    ("GET", "/ogc/collections/<collection_id>"),
    ("GET", "/ogc/collections/<collection_id>/queryables"),
    ("GET", "/ogc/collections/<collection_id>/items"),
    ("GET", "/ogc/collections/<collection_id>/items/<feature_id>"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/static/<path:filename>"),
    ("GET", "/"),
    ("GET", "/map"),
    ("GET", "/upload"),
    ("GET", "/review"),
}
STAFF = {
    "/api/v1/stats": "read:stats",
    "/api/v1/exports/detections": "export",
    "/api/v1/exports/photos": "export",
    "/api/v1/exports/coco": "export",
    "/api/v1/models": "read:stats",
    "/api/v1/models/compare": "read:stats",
    "/api/v1/review/queue": "review",
    "/api/v1/photos/<int:photo_id>/annotations": "review",
}
# Changes a key may make without scope write: a reviewer's verified annotations.
WRITES = {("PUT", "/api/v1/photos/<int:photo_id>/annotations"): "review"}


def test_every_staff_route_carries_the_auth_decorator(app) -> None:  # type: ignore[no-untyped-def]
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        scope = getattr(view, "required_scope", None)
        if scope is None:
            # Flask-Limiter wraps views; the scope marker survives on the wrapped function.
            scope = getattr(getattr(view, "__wrapped__", None), "required_scope", None)
        path = re.sub(r"<int\([^)]*\):", "<int:", rule.rule)  # drop converter arguments
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (method, path) in PUBLIC:
                continue
            assert scope is not None, f"{method} {path} is neither public nor guarded"
            assert method == "GET" or scope == WRITES.get((method, path), "write"), (
                method,
                path,
                scope,
            )
            if path in STAFF:
                assert scope == STAFF[path]


def test_cli_creates_lists_and_revokes_keys(pg_settings, client, seeded) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner(env=settings_env(pg_settings))
    made = runner.invoke(cli, ["keys", "create", "--name", "dashboard", "--scope", "read:stats"])
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    assert token.startswith("tm_")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/stats", headers=headers).status_code == 200
    assert client.get("/api/v1/exports/photos", headers=headers).status_code == 403
    listed = runner.invoke(cli, ["keys", "list"])
    assert "dashboard" in listed.output and "read:stats" in listed.output
    assert token not in listed.output
    prefix = token.split("_")[1]
    assert runner.invoke(cli, ["keys", "revoke", prefix]).exit_code == 0
    revoked = client.get("/api/v1/stats", headers=headers)
    assert revoked.status_code == 401
    assert revoked.get_json()["error"]["code"] == "invalid_api_key"
    bad = runner.invoke(cli, ["keys", "create", "--name", "x", "--scope", "admin"])
    assert bad.exit_code != 0 and "read:stats" in bad.output


def test_keys_are_stored_hashed_and_checked(client, pg_sessions, seeded) -> None:  # type: ignore[no-untyped-def]
    token = make_token(pg_sessions, "export")
    with pg_sessions() as session:
        stored = session.scalars(sa.select(ApiKey)).all()
    assert all(token.split("_", 2)[2] not in (k.secret_sha256, k.prefix) for k in stored)
    assert client.get("/api/v1/stats").get_json()["error"]["code"] == "api_key_required"
    assert client.get("/api/v1/stats").status_code == 401
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (
        client.get("/api/v1/exports/detections", headers={"X-API-Key": tampered}).status_code == 401
    )
    ok = client.get("/api/v1/exports/detections", headers={"X-API-Key": token})
    assert ok.status_code == 200
    assert client.get("/api/v1/stats", headers={"X-API-Key": token}).status_code == 403
    with pg_sessions() as session:
        used = session.scalar(sa.select(ApiKey).where(ApiKey.prefix == token.split("_")[1]))
    assert used is not None and used.last_used_at is not None


def test_delete_needs_the_write_scope(client, pg_sessions, seeded) -> None:  # type: ignore[no-untyped-def]
    photo_id = seeded.detections[0].photo.id
    reader = make_token(pg_sessions, "read:stats", "export")
    writer = make_token(pg_sessions, "write")
    assert client.delete(f"/api/v1/photos/{photo_id}").status_code == 401
    assert (
        client.delete(f"/api/v1/photos/{photo_id}", headers={"X-API-Key": reader}).status_code
        == 403
    )
    assert (
        client.delete(f"/api/v1/photos/{photo_id}", headers={"X-API-Key": writer}).status_code
        == 204
    )
    assert client.get(f"/api/v1/photos/{photo_id}").status_code == 404
    left = client.get("/api/v1/detections", query_string={"limit": 10_000}).get_json()
    assert photo_id not in {f["properties"]["photo_id"] for f in left["features"]}
    assert (
        client.delete(f"/api/v1/photos/{photo_id}", headers={"X-API-Key": writer}).status_code
        == 404
    )


def test_a_key_whose_prefix_is_all_digits_is_revoked_by_prefix(client, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    from trashmap.apikeys import revoke_key

    token = make_token(pg_sessions, "read:stats")
    digits = "123456789012"
    with pg_sessions() as session:  # prefixes are random hex: make this one all digits
        session.execute(sa.delete(ApiKey).where(ApiKey.prefix == digits))
        made = sa.update(ApiKey).where(ApiKey.prefix == token.split("_")[1])
        session.execute(made.values(prefix=digits))
        session.commit()
    token = f"tm_{digits}_{token.split('_', 2)[2]}"
    assert client.get("/api/v1/stats", headers={"X-API-Key": token}).status_code == 200
    with pg_sessions() as session:
        key = revoke_key(session, digits)
        session.commit()
        assert key.prefix == digits and key.revoked_at is not None
    assert client.get("/api/v1/stats", headers={"X-API-Key": token}).status_code == 401
    with pg_sessions() as session:
        assert revoke_key(session, str(key.id)).id == key.id  # by id still works
