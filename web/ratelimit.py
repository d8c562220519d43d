"""Rate limits of the public API (flask-limiter): per API key when one is sent, else per IP.

Counters live in Redis when the broker is Redis, so every web process shares them; on the
embedded default they live in each process's memory. While Redis is down each process
counts in its own memory (flask-limiter's fallback, announced by one warning) and goes
back to Redis when it answers again: the limits never switch off.
"""

from __future__ import annotations

import logging

from flask import Flask, request
from flask_limiter import Limiter

from trashmap.settings import Settings
from web.auth import current_api_key

logger = logging.getLogger(__name__)

UPLOAD_ENDPOINT = "photos.upload_photo"


def storage_url(settings: Settings) -> str:
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return "memory://"


def rate_key() -> str:
    """Callers with a valid key are counted by key; the rest by their address."""
    try:
        key = current_api_key()
    except Exception as exc:  # a database hiccup must not turn into a 500 here
        logger.warning("rate limit: API key lookup failed: %s", exc)
        key = None
    if key is not None:
        return f"key:{key.id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def _not_api() -> bool:
    return not request.path.startswith(("/api/", "/ogc"))


def register_ratelimits(app: Flask, settings: Settings) -> Limiter:
    """Read limit on every /api/ and /ogc route, the upload limit on POST /api/v1/photos."""
    uri = storage_url(settings)
    limiter = Limiter(
        rate_key,
        default_limits=[settings.rate_limit_read],
        default_limits_exempt_when=_not_api,
        storage_uri=uri,
        # An unreachable Redis must cost a request a second at most, not a TCP timeout.
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1}
        if uri.startswith(("redis://", "rediss://"))
        else {},
        # Deployments sharing one Redis keep apart through their queue name.
        key_prefix=f"trashmap-limits:{settings.queue_name}",
        headers_enabled=True,
        # A Redis outage moves the counters into memory (the same limits, per process).
        in_memory_fallback_enabled=True,
        swallow_errors=True,  # anything else that fails in the limiter must not fail requests
        enabled=settings.rate_limit_enabled,
    )
    limiter.init_app(app)
    # Flask-Limiter keeps only weak references to its limiter; the app holds the strong one.
    app.extensions["trashmap_limiter"] = limiter
    if UPLOAD_ENDPOINT in app.view_functions:
        limited = limiter.limit(settings.rate_limit_upload)(app.view_functions[UPLOAD_ENDPOINT])
        app.view_functions[UPLOAD_ENDPOINT] = limited  # type: ignore[assignment]
    return limiter
