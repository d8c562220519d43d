"""GET /api/v1/tiles/{z}/{x}/{y}.mvt: Mapbox vector tiles of detections (web/query/tiles.py).

Tiles are cached per process (TileCache) and validated against the database on every
request: one statement reads the tile's signature (web/query/tiles.py) and builds the tile
only when it differs from the cached one's, so every gunicorn process serves the current
tile. A process without the tile reads it from the tile store (migration 0011; unfiltered
tiles, filled by `trashmap tiles seed` and by every build) before it builds one. The
signature is also the ETag: a client that sends it back gets a 304.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from typing import Any

from flask import Blueprint, Response, current_app, request

from web.context import db
from web.errors import ApiError
from web.query.features import is_postgis
from web.query.filters import MapFilter
from web.query.tiles import BUFFER as BUFFER
from web.query.tiles import DETAIL_ZOOM as DETAIL_ZOOM
from web.query.tiles import EXTENT as EXTENT
from web.query.tiles import LAYER as LAYER
from web.query.tiles import MAX_ZOOM as MAX_ZOOM
from web.query.tiles import TILE_FORMAT, Signature, cacheable, read_tile, tile_bytes

bp = Blueprint("tiles", __name__)
MVT_TYPE = "application/vnd.mapbox-vector-tile"
# Tile bytes one process keeps; a city-centre tile is tens of kB, most tiles far less.
CACHE_BYTES = 64 * 1024 * 1024
# The ETag names the tile format too, so a release that changes tiles never gets a 304
# for a tile built by an older one.
ETAG_FORMAT = TILE_FORMAT
_ETAG = re.compile(rf"^{ETAG_FORMAT}-([0-9a-f]+)-(\d+)-(\d+)$")


class TileCache:
    """Least recently used tile bytes by (z, x, y, filters), each with its signature."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Any, tuple[Signature, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # gunicorn's threaded workers share a process

    def get(self, key: Any) -> tuple[Signature, bytes] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Any, signature: Signature, data: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.size -= len(old[1])
            self._entries[key] = (signature, data)
            self.size += len(data)
            while self.size > self.max_bytes and self._entries:
                self.size -= len(self._entries.popitem(last=False)[1][1])


def tile_cache() -> TileCache:
    """This app's cache (one per app: two apps in a process may use two databases)."""
    return current_app.extensions.setdefault("tile_cache", TileCache(CACHE_BYTES))  # type: ignore[no-any-return]


def tile_key(z: int, x: int, y: int, flt: MapFilter) -> str:
    """A digest of the tile and its filters, the same in every process, so that each tile
    URL has an ETag of its own: with one ETag shared by a tile's filtered and unfiltered
    versions, the map page never settled (MapLibre's `idle`) after a filter change."""
    return hashlib.blake2b(repr((z, x, y, flt)).encode(), digest_size=8).hexdigest()


def _client_signature(digest: str) -> Signature | None:
    """The signature in the request's If-None-Match, when it holds one of ours for this tile."""
    # Weak tags too: a proxy that compresses the tile (nginx gzip) weakens the ETag.
    for tag in request.if_none_match.as_set(include_weak=True):
        match = _ETAG.match(tag)
        if match and match[1] == digest:
            return int(match[2]), int(match[3])
    return None


@bp.get("/tiles/<int:z>/<int:x>/<int:y>.mvt")
def tile(z: int, x: int, y: int):  # type: ignore[no-untyped-def]
    """A vector tile of the detections matching the filters (PostgreSQL + PostGIS only)."""
    if z > MAX_ZOOM or x >= 2**z or y >= 2**z:
        raise ApiError(
            400,
            "invalid_tile",
            f"tile {z}/{x}/{y} does not exist (z <= {MAX_ZOOM}, 0 <= x, y < 2^z)",
        )
    session = db()
    if not is_postgis(session):
        raise ApiError(
            501,
            "tiles_need_postgis",
            "vector tiles need PostgreSQL with PostGIS; "
            "this service runs on the embedded SQLite database (use /api/v1/grid "
            "or /api/v1/detections instead)",
        )
    flt = MapFilter.from_args(request.args)
    if not cacheable(flt):
        response = Response(tile_bytes(session, flt, z, x, y), mimetype=MVT_TYPE)
        response.headers["Cache-Control"] = "public, max-age=60"
        return response
    cache, key, digest = tile_cache(), (z, x, y, flt), tile_key(z, x, y, flt)
    entry = cache.get(key)
    known = entry[0] if entry is not None else _client_signature(digest)
    signature, data = read_tile(session, flt, z, x, y, known)
    if data is not None:
        cache.put(key, signature, data)
    elif entry is not None:
        data = entry[1]
    # No data and no entry: the client's copy is current (known came from its ETag).
    response = Response(data, mimetype=MVT_TYPE) if data is not None else Response(status=304)
    response.set_etag(f"{ETAG_FORMAT}-{digest}-{signature[0]}-{signature[1]}")
    # Stored, but revalidated on each use: a changed tile shows at once.
    response.headers["Cache-Control"] = "public, no-cache"
    return response.make_conditional(request)
