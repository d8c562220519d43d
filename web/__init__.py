"""trashmap web service: the Flask app factory."""

from __future__ import annotations

import logging

from flask import Flask

from trashmap.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; nothing connects until the first request."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        # Werkzeug answers 413 from Content-Length before reading the body; the margin
        # is for the multipart envelope around the file.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 64 * 1024,
        JSON_SORT_KEYS=False,
        SECRET_KEY=settings.secret_key or None,
    )
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client address is the proxy's X-Forwarded-For entry; the Host header is never
        # trusted for anything (links use TRASHMAP_PUBLIC_URL).
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops
        )
    register_services(app, settings)
    register_blueprints(app)
    register_map_api(app, settings)
    register_operations(app)
    register_errors(app)
    register_security(app)
    return app


def register_services(app: Flask, settings: Settings) -> None:
    from web.context import Services

    app.extensions["trashmap"] = Services.build(settings)
    app.teardown_appcontext(Services.close_request_session)


def register_blueprints(app: Flask) -> None:
    from web.api.coco_export import bp as coco_export_bp
    from web.api.detections import bp as detections_bp
    from web.api.models_api import bp as models_api_bp
    from web.api.photos import bp as photos_bp
    from web.api.review import bp as review_bp
    from web.ops.health import bp as health_bp

    app.register_blueprint(photos_bp, url_prefix="/api/v1")
    app.register_blueprint(detections_bp, url_prefix="/api/v1")
    for blueprint in (review_bp, coco_export_bp, models_api_bp):
        app.register_blueprint(blueprint, url_prefix="/api/v1")
    app.register_blueprint(health_bp)


def register_map_api(app: Flask, settings: Settings) -> None:
    """The map API, its docs and pages, and the rate limits on /api/."""
    from web.api.exports import bp as exports_bp
    from web.api.grid import bp as grid_bp
    from web.api.ogc import bp as ogc_bp
    from web.api.openapi import bp as openapi_bp
    from web.api.photo_image import bp as photo_image_bp
    from web.api.stats import bp as stats_bp
    from web.api.tiles import bp as tiles_bp
    from web.pages import bp as pages_bp
    from web.ratelimit import register_ratelimits

    for blueprint in (photo_image_bp, stats_bp, grid_bp, tiles_bp, exports_bp):
        app.register_blueprint(blueprint, url_prefix="/api/v1")
    app.register_blueprint(openapi_bp)
    app.register_blueprint(ogc_bp, url_prefix="/ogc")
    app.register_blueprint(pages_bp)
    register_ratelimits(app, settings)


def register_operations(app: Flask) -> None:
    """GET /metrics (Prometheus) and GET /readyz (readiness probe)."""
    from web.ops.metrics import register_metrics
    from web.ops.readiness import bp as readiness_bp

    register_metrics(app)
    app.register_blueprint(readiness_bp)


def register_security(app: Flask) -> None:
    from web.security import register_security_headers

    register_security_headers(app)


def register_errors(app: Flask) -> None:
    from web.errors import register_error_handlers

    register_error_handlers(app)
