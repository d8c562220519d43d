"""Vector tiles decode (mapbox-vector-tile) and hold exactly the seeded detections they cover;
rollup-built low zooms add up as scanned ones do; cached tiles change exactly when the
detections they cover do."""

from __future__ import annotations

import math

import mapbox_vector_tile
import pytest
import sqlalchemy as sa

from tests.conftest import embedded_settings
from tests.web.conftest import seed_map
from trashmap import migrate, rollup
from trashmap.db import make_engine, make_session_factory, session_scope
from trashmap.models import Detection
from web import create_app
from web.api.tiles import BUFFER, DETAIL_ZOOM, EXTENT
from web.query.filters import MapFilter
from web.query.tiles import ROLLUP_MAX_ZOOM, occupied_tiles, rollup_allowed, tile_bytes


def tile_of(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


def tile_px(lat: float, lon: float, z: int, x: int, y: int) -> tuple[float, float]:
    """Position in tile units, y downwards."""
    n = 2**z
    fx = (lon + 180) / 360 * n
    fy = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return (fx - x) * EXTENT, (fy - y) * EXTENT


def _decode(data: bytes) -> list[dict]:  # type: ignore[type-arg]
    layers = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})
    return layers["detections"]["features"] if data else []


def test_detail_tile_holds_the_detections_inside_it(client, seeded) -> None:  # type: ignore[no-untyped-def]
    anchor = next(d.photo for d in seeded.detections if d.photo.lat is not None)
    z = DETAIL_ZOOM + 1
    x, y = tile_of(anchor.lat, anchor.lon, z)
    response = client.get(f"/api/v1/tiles/{z}/{x}/{y}.mvt")
    assert response.status_code == 200
    assert response.mimetype == "application/vnd.mapbox-vector-tile"
    features = _decode(response.data)
    inside, buffered = set(), set()
    for d in seeded.detections:
        if d.photo.lat is None:
            continue
        px, py = tile_px(d.photo.lat, d.photo.lon, z, x, y)
        if 0 < px < EXTENT and 0 < py < EXTENT:
            inside.add(d.id)
        if -BUFFER <= px <= EXTENT + BUFFER and -BUFFER <= py <= EXTENT + BUFFER:
            buffered.add(d.id)
    ids = {f["properties"]["id"] for f in features}
    assert anchor.id and inside and inside <= ids <= buffered
    by_id = {d.id: d for d in seeded.detections}
    for f in features:
        seed = by_id[f["properties"]["id"]]
        assert f["properties"]["label"] == seed.label
        px, py = tile_px(seed.photo.lat, seed.photo.lon, z, x, y)
        gx, gy = f["geometry"]["coordinates"]
        assert abs(gx - px) <= 1 and abs(gy - py) <= 1  # the point sits where the photo was


@pytest.mark.parametrize("query", [{}, {"label": "Drink can"}, {"min_score": "0.5"}])
def test_low_zoom_tiles_hold_clusters_whose_counts_add_up(client, seeded, query) -> None:  # type: ignore[no-untyped-def]
    x, y = tile_of(48.8566, 2.3522, 4)  # Paris, far from this tile's edges
    features = _decode(client.get(f"/api/v1/tiles/4/{x}/{y}.mvt", query_string=query).data)
    expected = [
        d
        for d in seeded.detections
        if d.photo.lat is not None
        and abs(d.photo.lat - 48.8566) < 1
        and (not query.get("label") or d.label == query["label"])
        and d.score >= float(query.get("min_score", 0))
    ]
    assert sum(f["properties"]["count"] for f in features) == len(expected) > 0
    assert all(f["properties"]["count"] >= 1 for f in features)


def test_empty_tile_is_empty(client, seeded) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/tiles/10/0/0.mvt")
    assert response.status_code == 200 and _decode(response.data) == []


def test_sqlite_gives_the_same_answers_and_a_clear_501_for_tiles(tmp_path, client, seeded) -> None:  # type: ignore[no-untyped-def]
    settings = embedded_settings(tmp_path)
    migrate.upgrade(settings)
    engine = make_engine(settings)
    try:
        seed_map(make_session_factory(engine))
        lite = create_app(settings).test_client()
        for query in [
            {},
            {"bbox": "2.25,48.80,2.45,48.92", "min_score": "0.3"},
            {"near": "48.8566,2.3522", "radius_m": "6000", "label": "Cigarette"},
            {"supercategory": "Bottle", "since": "2024-02-01", "until": "2024-03-01"},
        ]:
            a = lite.get("/api/v1/detections", query_string=query).get_json()
            b = client.get("/api/v1/detections", query_string=query).get_json()
            assert a["numberMatched"] == b["numberMatched"]
            strip = [
                (f["geometry"], f["properties"]["label"], f["properties"]["score"])
                for f in a["features"]
            ]
            assert strip == [
                (f["geometry"], f["properties"]["label"], f["properties"]["score"])
                for f in b["features"]
            ]
            ga = lite.get("/api/v1/grid", query_string={**query, "zoom": 6}).get_json()
            gb = client.get("/api/v1/grid", query_string={**query, "zoom": 6}).get_json()
            assert ga["features"] == gb["features"]
        response = lite.get("/api/v1/tiles/4/8/5.mvt")
        assert response.status_code == 501
        assert "PostGIS" in response.get_json()["error"]["message"]
    finally:
        engine.dispose()


def _columns(data: bytes, x: int, y: int) -> dict[int, int]:
    """Detections per cluster column across the world, from the clusters inside tile x, y
    (rollup cells and scanned clusters share columns; their rows differ: degrees against
    web-mercator units, so only a whole column adds up the same)."""
    out: dict[int, int] = {}
    for f in _decode(data):
        px, py = f["geometry"]["coordinates"]
        if 0 <= px < EXTENT and 0 <= py < EXTENT:
            column = x * (EXTENT // 64) + int(px) // 64
            out[column] = out.get(column, 0) + f["properties"]["count"]
    return out


@pytest.mark.parametrize(
    "flt",
    [
        MapFilter(),
        MapFilter(labels=("Drink can", "Cigarette")),
        MapFilter(min_score=0.5),
        MapFilter(supercategory="Bottle", model_version=("seed", "2")),
    ],
    ids=["all", "labels", "min_score", "supercategory+model"],
)
@pytest.mark.parametrize("folded", [True, False], ids=["folded", "deltas"])
def test_rollup_tiles_count_what_scanned_tiles_count(pg_sessions, seeded, flt, folded) -> None:  # type: ignore[no-untyped-def]
    zooms = range(0, ROLLUP_MAX_ZOOM + 1)
    if folded:  # otherwise the counts are all still pending deltas
        with session_scope(pg_sessions) as session:
            rollup.fold(session)
    expected = sum(
        1
        for d in seeded.detections
        if d.photo.lat is not None
        and (not flt.labels or d.label in flt.labels)
        and (flt.min_score is None or d.score >= flt.min_score)
        and (flt.model_version is None or d.model == ":".join(flt.model_version))
        and (flt.supercategory is None or d.label in {"Clear plastic bottle", "Glass bottle"})
    )
    assert expected > 0
    with session_scope(pg_sessions) as session:
        for z, occupied in occupied_tiles(session, flt, zooms).items():
            assert rollup_allowed(flt, z)
            # A rollup cell lies in the tile of its centre, maybe the one above or below.
            tiles = {(x, y + dy) for x, y in occupied for dy in (-1, 0, 1) if 0 <= y + dy < 2**z}
            totals: dict[str, dict[int, int]] = {"scan": {}, "rollup": {}}
            for source, columns in totals.items():
                for x, y in tiles:
                    for column, n in _columns(
                        tile_bytes(session, flt, z, x, y, source), x, y
                    ).items():
                        columns[column] = columns.get(column, 0) + n
            assert totals["rollup"] == totals["scan"], z
            assert sum(totals["rollup"].values()) == expected, z


def _tile(client, z: int, x: int, y: int, **headers: str):  # type: ignore[no-untyped-def]
    response = client.get(f"/api/v1/tiles/{z}/{x}/{y}.mvt", headers=headers)
    assert response.status_code in (200, 304), response.data[:300]
    return response


def _add_detection(pg_sessions, photo_id: int, lat: float, lon: float, **fields) -> int:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        mv = session.scalar(sa.text("SELECT id FROM model_versions ORDER BY id LIMIT 1"))
        det = Detection(
            photo_id=photo_id,
            model_version_id=mv,
            label=fields.get("label", "Drink can"),
            score=fields.get("score", 0.9),
            x1=1.0,
            y1=1.0,
            x2=9.0,
            y2=9.0,
            lat=lat,
            lon=lon,
        )
        session.add(det)
        session.flush()
        return int(det.id)


def _write(pg_sessions, sql: str, **params) -> None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        session.execute(sa.text(sql), params)


@pytest.mark.parametrize("z", [4, DETAIL_ZOOM - 2, DETAIL_ZOOM + 1])
def test_cached_tile_changes_exactly_when_a_detection_inside_it_does(  # type: ignore[no-untyped-def]
    client, pg_sessions, seeded, z
) -> None:
    located = [d for d in seeded.detections if d.photo.lat is not None]
    anchor = next(d for d in located if abs(d.photo.lat - 48.8566) < 1)
    far = next(d for d in located if d.photo.lat < 0)  # Sydney: another tile
    x, y = tile_of(anchor.photo.lat, anchor.photo.lon, z)
    first = _tile(client, z, x, y)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.headers["Cache-Control"] == "public, no-cache"
    revalidated = _tile(client, z, x, y, **{"If-None-Match": etag})
    assert revalidated.status_code == 304 and not revalidated.data

    current = bytes(first.data)

    def unchanged() -> None:
        again = _tile(client, z, x, y)
        assert again.headers["ETag"] == etag and again.data == current
        assert _tile(client, z, x, y, **{"If-None-Match": etag}).status_code == 304

    def changed() -> bytes:
        nonlocal etag, current
        response = _tile(client, z, x, y, **{"If-None-Match": etag})
        assert response.status_code == 200 and response.headers["ETag"] != etag
        etag, current = response.headers["ETag"], bytes(response.data)
        return current

    def ids_or_total(data: bytes) -> object:
        features = _decode(data)
        if z >= DETAIL_ZOOM:
            return {f["properties"]["id"]: f["properties"] for f in features}
        return sum(f["properties"]["count"] for f in features)

    # Outside the tile: insert, update and delete leave it cached.
    outside = _add_detection(pg_sessions, far.photo.id, far.photo.lat, far.photo.lon)
    unchanged()
    _write(pg_sessions, "UPDATE detections SET score = 0.11 WHERE id = :id", id=outside)
    unchanged()
    _write(pg_sessions, "DELETE FROM detections WHERE id = :id", id=outside)
    unchanged()
    with session_scope(pg_sessions) as session:
        rollup.fold(session)  # moving deltas into the counters changes no signature
    unchanged()

    before = ids_or_total(first.data)
    inside = _add_detection(pg_sessions, anchor.photo.id, anchor.photo.lat, anchor.photo.lon)
    after = ids_or_total(changed())
    if z >= DETAIL_ZOOM:
        assert isinstance(after, dict) and set(after) == set(before) | {inside}  # type: ignore[arg-type]
    else:
        assert after == before + 1  # type: ignore[operator]
    unchanged()
    _write(pg_sessions, "UPDATE detections SET score = 0.42 WHERE id = :id", id=inside)
    data = changed()
    if z >= DETAIL_ZOOM:
        assert abs(ids_or_total(data)[inside]["score"] - 0.42) < 1e-6  # type: ignore[index]
    # Moved out of the tile, then deleted after moving back.
    _write(
        pg_sessions,
        "UPDATE detections SET lat = :lat, lon = :lon WHERE id = :id",
        id=inside,
        lat=far.photo.lat,
        lon=far.photo.lon,
    )
    assert ids_or_total(changed()) == before
    _write(
        pg_sessions,
        "UPDATE detections SET lat = :lat, lon = :lon WHERE id = :id",
        id=inside,
        lat=anchor.photo.lat,
        lon=anchor.photo.lon,
    )
    changed()
    _write(pg_sessions, "DELETE FROM detections WHERE id = :id", id=inside)
    assert ids_or_total(changed()) == before
    # Deleting the photo cascades to its detections.
    _write(pg_sessions, "DELETE FROM photos WHERE id = :id", id=anchor.photo.id)
    changed()
    _write(pg_sessions, "TRUNCATE detections")
    assert ids_or_total(changed()) in ({}, 0)


def test_every_process_sees_a_write_made_elsewhere(app, pg_settings, pg_sessions, seeded) -> None:  # type: ignore[no-untyped-def]
    """Two apps stand for two gunicorn processes, each with its own cache."""
    other = create_app(pg_settings).test_client()
    try:
        anchor = next(d for d in seeded.detections if d.photo.lat is not None)
        z = DETAIL_ZOOM
        x, y = tile_of(anchor.photo.lat, anchor.photo.lon, z)
        ours = app.test_client()
        a = _tile(ours, z, x, y)
        # A process that never built the tile still answers 304 to a current ETag, also
        # one a compressing proxy made weak.
        for tag in (a.headers["ETag"], "W/" + a.headers["ETag"]):
            response = _tile(other, z, x, y, **{"If-None-Match": tag})
            assert response.status_code == 304 and not response.data
        b = _tile(other, z, x, y)
        assert a.data == b.data and a.headers["ETag"] == b.headers["ETag"]
        # Each tile URL has its own ETag: another filter's copy is never taken as current.
        url = f"/api/v1/tiles/{z}/{x}/{y}.mvt"
        filtered = other.get(
            url, query_string={"label": anchor.label}, headers={"If-None-Match": a.headers["ETag"]}
        )
        assert filtered.status_code == 200 and filtered.headers["ETag"] != a.headers["ETag"]
        assert {f["properties"]["label"] for f in _decode(filtered.data)} == {anchor.label}
        added = _add_detection(pg_sessions, anchor.photo.id, anchor.photo.lat, anchor.photo.lon)
        for client in (ours, other):
            ids = {f["properties"]["id"] for f in _decode(_tile(client, z, x, y).data)}
            assert added in ids
    finally:
        other.application.extensions["trashmap"].engine.dispose()


def test_tiles_filtered_by_photo_dates_are_never_cached(client, pg_sessions, seeded) -> None:  # type: ignore[no-untyped-def]
    anchor = next(d for d in seeded.detections if d.photo.taken_at and d.photo.lat is not None)
    z = DETAIL_ZOOM
    x, y = tile_of(anchor.photo.lat, anchor.photo.lon, z)
    day = anchor.photo.taken_at.date().isoformat()
    query = {"since": day}
    first = client.get(f"/api/v1/tiles/{z}/{x}/{y}.mvt", query_string=query)
    assert first.status_code == 200 and "ETag" not in first.headers
    assert anchor.id in {f["properties"]["id"] for f in _decode(first.data)}
    # Only the photo changes (its date moves before `since`): no detection trigger fires.
    _write(
        pg_sessions,
        "UPDATE photos SET taken_at = taken_at - interval '400 days' WHERE id = :id",
        id=anchor.photo.id,
    )
    second = client.get(f"/api/v1/tiles/{z}/{x}/{y}.mvt", query_string=query)
    assert anchor.id not in {f["properties"]["id"] for f in _decode(second.data)}
