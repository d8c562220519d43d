"""Links in answers, built on the service's public base URL (TRASHMAP_PUBLIC_URL).

Behind a proxy the request's own Host is an internal name, or whatever the client sent,
so links use the configured address. When it is unset, plain API links stay
root-relative; clients that need absolute links (OGC API clients such as GDAL and QGIS
do not resolve relative ones) get the address the request came to.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode

from flask import request

from web.context import services


def public_base_url(from_request: bool = False) -> str:
    """`scheme://host[/prefix]`, no trailing slash: the setting; when unset, the request's
    address if `from_request`, else "" (root-relative links)."""
    configured = services().settings.public_url
    if configured:
        return configured.rstrip("/")
    if from_request:
        return request.host_url.rstrip("/") + request.script_root
    return ""


def public_link(
    path: str, query: Sequence[tuple[str, str]] = (), from_request: bool = False
) -> str:
    """The link to `path` (below the application root) with `query`, on the public base."""
    base = public_base_url(from_request)
    return f"{base}{path}?{urlencode(query)}" if query else f"{base}{path}"
