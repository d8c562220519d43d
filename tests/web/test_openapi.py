"""schemathesis against the live app: no 5xx, and every answer matches the OpenAPI document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import LiveServer, seed_map

# Per operation and generation mode; bounded so the whole run stays well under two minutes.
EXAMPLES = 25
# Invalid requests: never a 5xx, always refused (4xx), and the refusal is documented.
NEGATIVE_CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def live_api(pg_settings, pg_engine):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from trashmap.db import make_session_factory
    from web import create_app

    with pg_engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE photos, detections RESTART IDENTITY CASCADE"))
    seed_map(make_session_factory(pg_engine), photos=30)
    app = create_app(pg_settings)
    with LiveServer(app) as server:
        yield server
    app.extensions["trashmap"].engine.dispose()


@pytest.fixture(scope="module")
def staff_headers(pg_engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from tests.web.conftest import make_token
    from trashmap.db import make_session_factory

    token = make_token(make_session_factory(pg_engine), "read:stats", "export", "write", "review")
    return {"Authorization": f"Bearer {token}"}


def _run(operation, mode, headers, checks) -> None:  # type: ignore[no-untyped-def]
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case) -> None:  # type: ignore[no-untyped-def]
        # A filter string can match its schema type and still be nonsense (a bbox with
        # min > max): those answer 400 by design, so "valid data accepted" is not checked.
        case.call_and_validate(
            headers=headers, timeout=30, checks=checks, excluded_checks=[positive_data_acceptance]
        )

    check()


def test_api_matches_its_openapi_document(live_api, staff_headers) -> None:  # type: ignore[no-untyped-def]
    """Valid requests: no 5xx, documented status, content type, headers and body schema;
    invalid requests: never a 5xx and never accepted (a 2xx for a request that violates
    the document)."""
    schema = schemathesis.openapi.from_url(f"{live_api.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    for operation in operations:
        _run(operation, GenerationMode.POSITIVE, staff_headers, None)
        # OGC API - Features declares the limit's maximum and requires a larger one to be
        # served as the maximum, not refused: "invalid data accepted" does not apply there.
        ogc_items = operation.path.startswith("/ogc/") and operation.path.endswith("/items")
        checks = [c for c in NEGATIVE_CHECKS if not (ogc_items and c is negative_data_rejection)]
        _run(operation, GenerationMode.NEGATIVE, staff_headers, checks)


def test_openapi_lists_every_api_route(app) -> None:  # type: ignore[no-untyped-def]
    import re

    from web.api.openapi import build_spec

    documented = {
        (method.upper(), path) for path, ops in build_spec()["paths"].items() for method in ops
    }
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.rule.endswith("openapi.json"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, f"{method} {path} is missing from OpenAPI"


def test_docs_page_uses_bundled_swagger_ui(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/api/docs").get_data(as_text=True)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    assert "http" not in page.replace("http-equiv", "")  # no CDN
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
