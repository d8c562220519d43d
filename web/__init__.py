"""trashmap web service: the Flask app factory."""

from __future__ import annotations

import logging

from flask import Flask

from web.settings import Settings

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
    register_services(app, settings)
    register_blueprints(app)
    register_errors(app)
    return app


def register_services(app: Flask, settings: Settings) -> None:
    from web.context import Services

    app.extensions["trashmap"] = Services.build(settings)
    app.teardown_appcontext(Services.close_request_session)


def register_blueprints(app: Flask) -> None:
    from web.detections import bp as detections_bp
    from web.health import bp as health_bp
    from web.photos import bp as photos_bp

    app.register_blueprint(photos_bp, url_prefix="/api/v1")
    app.register_blueprint(detections_bp, url_prefix="/api/v1")
    app.register_blueprint(health_bp)


def register_errors(app: Flask) -> None:
    from web.errors import register_error_handlers

    register_error_handlers(app)
