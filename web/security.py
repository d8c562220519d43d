"""Security headers on every response (pages and API alike)."""

from __future__ import annotations

from flask import Flask, Response

# Pages load only their own bundled scripts and styles; map tiles and thumbnails may come
# from OpenStreetMap and from this service (data: and blob: for thumbnails drawn in canvas).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; "
    "img-src 'self' data: blob: https://*.tile.openstreetmap.org; "
    "style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; "
    "connect-src 'self' https://*.tile.openstreetmap.org; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def register_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
        headers.setdefault("Permissions-Policy", "camera=(self), geolocation=(self)")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if response.mimetype == "text/html":
            headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
