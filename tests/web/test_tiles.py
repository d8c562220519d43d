"""Vector tiles decode (mapbox-vector-tile) and hold exactly the seeded detections they cover."""

from __future__ import annotations

import math

import mapbox_vector_tile
import pytest

from tests.conftest import embedded_settings
from tests.web.conftest import seed_map
from trashmap import migrate
from trashmap.db import make_engine, make_session_factory
from web import create_app
from web.api.tiles import BUFFER, DETAIL_ZOOM, EXTENT


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
