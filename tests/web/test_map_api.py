"""The map API on PostgreSQL + PostGIS against seeded rows: exact counts, pages, formats."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from datetime import datetime

import pytest

from tests.web.conftest import Seed, SeedDetection, SeedPhoto
from trashmap.geodesy import distance_m
from trashmap.taxonomy import supercategory_of

PARIS = (48.8566, 2.3522)
BBOX_PARIS = (2.25, 48.80, 2.45, 48.92)


def _in_bbox(p: SeedPhoto, box: tuple[float, float, float, float]) -> bool:
    return p.lat is not None and box[0] <= p.lon <= box[2] and box[1] <= p.lat <= box[3]


def _near(p: SeedPhoto, lat: float, lon: float, radius: float) -> bool:
    return p.lat is not None and distance_m(p.lat, p.lon, lat, lon) <= radius


def _between(p: SeedPhoto, since: datetime | None, until: datetime | None) -> bool:
    if p.taken_at is None:
        return since is None and until is None
    return (since is None or p.taken_at >= since) and (until is None or p.taken_at < until)


# (query, predicate on a seeded detection) pairs; the predicate is the specification.
DETECTION_CASES: list[tuple[dict[str, object], Callable[[SeedDetection], bool]]] = [
    ({}, lambda d: True),
    ({"bbox": ",".join(map(str, BBOX_PARIS))}, lambda d: _in_bbox(d.photo, BBOX_PARIS)),
    ({"label": ["Drink can", "Cigarette"]}, lambda d: d.label in ("Drink can", "Cigarette")),
    ({"supercategory": "Bottle"}, lambda d: supercategory_of(d.label) == "Bottle"),
    (
        {"min_score": "0.6", "label": "Plastic film"},
        lambda d: d.score >= 0.6 and d.label == "Plastic film",
    ),
    (
        {"near": f"{PARIS[0]},{PARIS[1]}", "radius_m": "5000"},
        lambda d: _near(d.photo, *PARIS, 5000),
    ),
    (
        {"since": "2024-02-01", "until": "2024-03-15"},
        lambda d: _between(d.photo, datetime(2024, 2, 1), datetime(2024, 3, 16)),
    ),
    (
        {"model_version": "seed:2", "min_score": "0.3"},
        lambda d: d.model == "seed:2" and d.score >= 0.3,
    ),
    (
        {
            "bbox": ",".join(map(str, BBOX_PARIS)),
            "supercategory": "Bottle",
            "since": "2024-02-01",
            "min_score": "0.2",
        },
        lambda d: (
            _in_bbox(d.photo, BBOX_PARIS)
            and supercategory_of(d.label) == "Bottle"
            and _between(d.photo, datetime(2024, 2, 1), None)
            and d.score >= 0.2
        ),
    ),
]


def _matching(seed: Seed, predicate: Callable[[SeedDetection], bool]) -> set[int]:
    return {d.id for d in seed.detections if d.photo.lat is not None and predicate(d)}


@pytest.mark.parametrize(("query", "predicate"), DETECTION_CASES)
def test_detection_filters_give_exact_counts(client, seeded, staff_token, query, predicate) -> None:  # type: ignore[no-untyped-def]
    expected = _matching(seeded, predicate)
    assert expected or query.get("model_version"), "each case should match something"
    body = client.get("/api/v1/detections", query_string={**query, "limit": 10_000}).get_json()
    assert body["numberMatched"] == len(expected)
    assert {f["id"] for f in body["features"]} == expected
    grid = client.get("/api/v1/grid", query_string={**query, "zoom": 3}).get_json()
    assert grid["total"] == len(expected)
    stats = client.get(
        "/api/v1/stats", query_string=query, headers={"X-API-Key": staff_token}
    ).get_json()
    assert stats["detections"] == len(expected)
    by_label = {row["label"]: row["count"] for row in stats["by_label"]}
    for label in {d.label for d in seeded.detections if d.id in expected}:
        assert by_label[label] == sum(
            1 for d in seeded.detections if d.id in expected and d.label == label
        )
    assert sum(b["count"] for b in stats["by_period"]["buckets"]) + stats["by_period"][
        "undated"
    ] == len(expected)


def test_photo_list_includes_photos_without_detections(client, seeded) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/v1/photos", query_string={"limit": 500}).get_json()
    located = {p.id for p in seeded.photos if p.lat is not None}
    assert {f["id"] for f in body["features"]} == located
    assert body["numberMatched"] == len(located)
    with_dets = {d.photo.id for d in seeded.detections}
    statuses = {f["id"]: f["properties"]["status"] for f in body["features"]}
    assert any(pid not in with_dets for pid in statuses)
    assert statuses == {p.id: p.status for p in seeded.photos if p.lat is not None}
    queued = client.get("/api/v1/photos", query_string={"status": "queued"}).get_json()
    assert {f["id"] for f in queued["features"]} == {
        p.id for p in seeded.photos if p.lat is not None and p.status == "queued"
    }
    cans = client.get(
        "/api/v1/photos",
        query_string={"label": "Drink can", "bbox": ",".join(map(str, BBOX_PARIS))},
    )
    assert {f["id"] for f in cans.get_json()["features"]} == {
        d.photo.id
        for d in seeded.detections
        if d.label == "Drink can" and _in_bbox(d.photo, BBOX_PARIS)
    }


def test_pages_have_no_duplicates_or_gaps(client, seeded) -> None:  # type: ignore[no-untyped-def]
    expected = _matching(seeded, lambda d: d.score >= 0.1)
    seen: list[int] = []
    query = {"min_score": "0.1", "limit": "7"}
    pages = 0
    while True:
        body = client.get("/api/v1/detections", query_string=query).get_json()
        assert body["numberMatched"] == len(expected)
        seen += [f["id"] for f in body["features"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        assert body["links"][0]["rel"] == "next"
        query = {**query, "cursor": body["next_cursor"]}
    assert seen == sorted(expected)  # stable order, each once
    assert pages == math.ceil(len(expected) / 7)


def test_geojson_follows_rfc_7946(client, seeded) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/detections", query_string={"limit": 10_000})
    assert response.mimetype == "application/geo+json"
    body = response.get_json()
    assert body["type"] == "FeatureCollection"
    by_id = {d.id: d for d in seeded.detections}
    for f in body["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Point"
        lon, lat = f["geometry"]["coordinates"]  # [lon, lat], never [lat, lon]
        seed = by_id[f["id"]]
        assert (lon, lat) == (seed.photo.lon, seed.photo.lat)
        props = f["properties"]
        assert set(props) >= {"photo_id", "label", "score", "box_x1", "model_version", "taken_at"}
        assert props["supercategory"] == supercategory_of(seed.label)
        assert not {"ip", "api_key", "original_filename"} & set(props)


def test_csv_round_trips_to_the_same_rows(client, seeded) -> None:  # type: ignore[no-untyped-def]
    query = {"supercategory": "Bottle", "limit": 10_000}
    geo = client.get("/api/v1/detections", query_string=query).get_json()["features"]
    response = client.get("/api/v1/detections", query_string={**query, "format": "csv"})
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert response.headers["X-Total-Count"] == str(len(geo)) == str(len(rows))
    for row, f in zip(rows, geo, strict=True):
        assert int(row["id"]) == f["id"]
        assert [float(row["lon"]), float(row["lat"])] == f["geometry"]["coordinates"]
        assert row["label"] == f["properties"]["label"]
        assert float(row["score"]) == f["properties"]["score"]
        for k in ("box_x1", "box_y1", "box_x2", "box_y2"):
            assert float(row[k]) == f["properties"][k]


def test_exports_stream_every_match(client, seeded, staff_token) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {staff_token}"}
    expected = _matching(seeded, lambda d: d.score >= 0.25)
    geo = client.get(
        "/api/v1/exports/detections", query_string={"min_score": "0.25"}, headers=headers
    )
    assert geo.status_code == 200 and geo.is_streamed
    assert {f["id"] for f in geo.get_json()["features"]} == expected
    csv_resp = client.get("/api/v1/exports/photos", query_string={"format": "csv"}, headers=headers)
    rows = list(csv.DictReader(io.StringIO(csv_resp.get_data(as_text=True))))
    assert {int(r["id"]) for r in rows} == {p.id for p in seeded.photos if p.lat is not None}


def test_stats_breaks_down_by_period(client, seeded, staff_token) -> None:  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": staff_token}
    month = client.get(
        "/api/v1/stats", query_string={"period": "month"}, headers=headers
    ).get_json()
    expected: dict[str, int] = {}
    for d in seeded.detections:
        if d.photo.lat is not None and d.photo.taken_at is not None:
            key = d.photo.taken_at.strftime("%Y-%m-01")
            expected[key] = expected.get(key, 0) + 1
    assert {b["start"]: b["count"] for b in month["by_period"]["buckets"]} == expected
    week = client.get("/api/v1/stats", query_string={"period": "week"}, headers=headers).get_json()
    for bucket in week["by_period"]["buckets"]:
        assert datetime.fromisoformat(bucket["start"]).weekday() == 0  # Mondays


@pytest.mark.parametrize(
    ("path", "query", "code"),
    [
        ("/api/v1/detections", {"bbox": "1,2,3"}, "invalid_bbox"),
        ("/api/v1/detections", {"near": "48.8,2.3"}, "invalid_radius_m"),
        ("/api/v1/detections", {"near": "x,y", "radius_m": "5"}, "invalid_near"),
        ("/api/v1/detections", {"since": "yesterday"}, "invalid_since"),
        ("/api/v1/detections", {"since": "2024-05-01", "until": "2024-04-01"}, "invalid_until"),
        ("/api/v1/detections", {"supercategory": "Spaceship"}, "invalid_supercategory"),
        ("/api/v1/detections", {"cursor": "not-a-cursor"}, "invalid_cursor"),
        ("/api/v1/detections", {"limit": "10001"}, "invalid_limit"),
        ("/api/v1/detections", {"format": "xml"}, "invalid_format"),
        ("/api/v1/detections", {"model_version": "nocolon"}, "invalid_model_version"),
        ("/api/v1/photos", {"status": "lost"}, "invalid_status"),
        ("/api/v1/grid", {"cell": "0"}, "invalid_cell"),
        ("/api/v1/tiles/3/9/1.mvt", {}, "invalid_tile"),
    ],
)
def test_bad_parameters_get_a_400_that_names_them(client, path, query, code) -> None:  # type: ignore[no-untyped-def]
    response = client.get(path, query_string=query)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize("name", ["endpoint", "_anchor", "_method", "_scheme", "_external"])
def test_next_link_carries_only_list_parameters(client, seeded, name) -> None:  # type: ignore[no-untyped-def]
    """Query arguments that url_for() would take as its own options are just ignored."""
    response = client.get("/api/v1/detections", query_string={"limit": 1, name: "x"})
    assert response.status_code == 200, response.get_json()
    href = response.get_json()["links"][0]["href"]
    assert href.startswith("/api/v1/detections?limit=1&cursor=") and name not in href
    assert response.headers["Link"] == f'<{href}>; rel="next"'
    assert client.get(href).status_code == 200


def test_next_link_ignores_the_host_header(client, pg_settings, seeded) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from web import create_app

    query = {"limit": 2, "label": ["Drink can", "Cigarette"], "format": "csv"}
    headers = {"Host": "evil.example"}
    relative = client.get("/api/v1/photos", query_string=query, headers=headers)
    assert "evil" not in relative.headers["Link"]
    assert relative.headers["Link"].startswith("</api/v1/photos?label=Drink+can&label=Cigarette")
    app = create_app(replace(pg_settings, public_url="https://trashmap.example.org"))
    try:
        public = app.test_client().get("/api/v1/photos", query_string=query, headers=headers)
        assert public.headers["Link"].startswith("<https://trashmap.example.org/api/v1/photos?")
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_a_cursor_pages_only_its_own_list(client, seeded) -> None:  # type: ignore[no-untyped-def]
    detections = client.get("/api/v1/detections", query_string={"limit": 1}).get_json()
    photos = client.get("/api/v1/photos", query_string={"limit": 1}).get_json()
    for path, cursor in (
        ("/api/v1/photos", detections["next_cursor"]),
        ("/api/v1/detections", photos["next_cursor"]),
    ):
        response = client.get(path, query_string={"cursor": cursor})
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/detections", "format"),
        ("/api/v1/detections", "supercategory"),
        ("/api/v1/detections", "radius_m"),
        ("/api/v1/detections", "cursor"),
        ("/api/v1/photos", "status"),
        ("/api/v1/grid", "bbox"),
        ("/api/v1/stats", "period"),
    ],
)
def test_empty_parameters_are_400(client, staff_token, path, name) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"{path}?{name}=", headers={"Authorization": f"Bearer {staff_token}"})
    assert response.status_code == 400, (path, name)
    assert response.get_json()["error"]["code"] == f"invalid_{name}"


def test_grid_cells_carry_their_edges_as_numbers(client, seeded) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/v1/grid", query_string={"cell": 0.5}).get_json()
    assert body["features"]
    for f in body["features"]:
        assert "bbox" not in f and "bbox" not in f["properties"]  # RFC 7946's member name
        props = f["properties"]
        west, south, east, north = (props[k] for k in ("west", "south", "east", "north"))
        assert all(isinstance(v, float) for v in (west, south, east, north))
        assert east - west == pytest.approx(0.5) and north - south == pytest.approx(0.5)
        lon, lat = f["geometry"]["coordinates"]
        assert (lon, lat) == pytest.approx(((west + east) / 2, (south + north) / 2))
