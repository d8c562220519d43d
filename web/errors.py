"""One JSON error shape for the whole API, and the exception -> status mapping."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from trashmap.imaging import ImageError, NotAnImage, UnsupportedFormat
from trashmap.storage import StorageUnavailable

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client can fix; rendered as {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def _image_status(exc: ImageError) -> int:
    if isinstance(exc, (NotAnImage, UnsupportedFormat)):
        return 415
    return 422


def register_error_handlers(app: Flask) -> None:
    """Every error leaves as JSON: client errors as 4xx, outages as 503, bugs as 500."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):  # type: ignore[no-untyped-def]
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(ImageError)
    def _image_error(exc: ImageError):  # type: ignore[no-untyped-def]
        return error_response(_image_status(exc), exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            code = "payload_too_large"
            limit_mb = app.extensions["trashmap"].settings.max_upload_mb
            message = f"the request body exceeds the upload limit of {limit_mb:g} MB"
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(OperationalError)
    def _database_down(exc: OperationalError):  # type: ignore[no-untyped-def]
        logger.warning("database unavailable: %s", exc.orig)
        response, status = error_response(
            503, "database_unavailable", "the database is unavailable; retry shortly"
        )
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(StorageUnavailable)
    def _storage_down(exc: StorageUnavailable):  # type: ignore[no-untyped-def]
        # Nothing was committed: the client retries and the photo is stored then.
        logger.warning("storage unavailable: %s", exc)
        response, status = error_response(
            503, "storage_unavailable", "photo storage is unavailable; retry shortly"
        )
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(DBAPIError)
    def _database_error(exc: DBAPIError):  # type: ignore[no-untyped-def]
        if exc.connection_invalidated:
            return _database_down(exc)  # type: ignore[arg-type]
        logger.exception("database error")
        return error_response(500, "internal_error", "an unexpected database error occurred")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
