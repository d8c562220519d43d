"""Who is calling: the API key of a request, and the decorator that guards staff endpoints."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request

from trashmap.apikeys import verify_token
from trashmap.db import session_scope
from trashmap.models import ApiKey
from web.context import services
from web.errors import ApiError

F = TypeVar("F", bound=Callable[..., Any])
_UNSET = object()


def presented_token() -> str | None:
    """The key sent as `Authorization: Bearer ...` or `X-API-Key: ...`, if any."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("X-API-Key", "").strip() or None


def current_api_key() -> ApiKey | None:
    """The verified key of this request (checked once per request, in its own session)."""
    cached = g.get("api_key", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    token = presented_token()
    key = None
    if token:
        with session_scope(services().sessions) as session:
            key = verify_token(session, token)
            if key is not None:
                session.flush()
                session.expunge(key)
    g.api_key = key
    return key


def require_scope(scope: str) -> Callable[[F], F]:
    """Answer 401 without a valid key and 403 when the key lacks `scope`."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            key = current_api_key()
            if key is None:
                message = (
                    "this endpoint needs an API key: send 'Authorization: Bearer <key>'"
                    " or 'X-API-Key: <key>' (made with `trashmap keys create`)"
                )
                code = "api_key_required"
                if presented_token():
                    code, message = "invalid_api_key", "the API key is unknown or revoked"
                raise ApiError(401, code, message)
            if scope not in (key.scopes or []):
                raise ApiError(403, "insufficient_scope", f"this API key lacks scope {scope!r}")
            return view(*args, **kwargs)

        guarded.required_scope = scope  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate
