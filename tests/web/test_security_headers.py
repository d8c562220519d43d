"""Security headers on pages and API responses."""

from __future__ import annotations


def test_pages_carry_a_content_security_policy(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/map")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for response in (page, client.get("/api/v1/detections")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_api_errors_are_json_not_html(client) -> None:  # type: ignore[no-untyped-def]
    for response in (client.get("/api/v1/nope"), client.delete("/api/v1/detections")):
        assert response.status_code in (404, 405)
        assert response.is_json and "error" in response.get_json()
