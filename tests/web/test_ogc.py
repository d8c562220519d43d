"""OGC API - Features at /ogc: the standard's documents through the Flask client, and GDAL's
own OAPIF driver reading every page from a running `trashmap web`."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from tests.conftest import settings_env
from tests.web.conftest import LABELS, SeedDetection, SeedPhoto
from trashmap.db import session_scope
from trashmap.models import Detection, ModelVersion, Photo
from trashmap.taxonomy import supercategory_of
from web import create_app

CORE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
GEOJSON_CLASS = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"
OAS30 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30"


def _links(body: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {link["rel"]: link for link in body["links"]}


def _located(seeded) -> list[SeedDetection]:  # type: ignore[no-untyped-def]
    return [d for d in seeded.detections if d.photo.lat is not None]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def test_landing_page_links_to_definition_conformance_and_data(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/ogc", "/ogc/"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "application/json"
        links = _links(response.get_json())
        assert links["self"]["href"] == "http://localhost/ogc"
        assert links["service-desc"]["href"] == "http://localhost/ogc/api"
        assert links["service-desc"]["type"] == "application/json"  # GDAL takes no other
        assert links["conformance"]["href"] == "http://localhost/ogc/conformance"
        assert links["data"]["href"] == "http://localhost/ogc/collections"
        assert links["http://www.opengis.net/def/rel/ogc/1.0/data"] == {
            **links["data"],
            "rel": "http://www.opengis.net/def/rel/ogc/1.0/data",
        }
    # The API definition is relative to /ogc, where OGC clients look up the items parameters.
    api = client.get("/ogc/api").get_json()
    assert api["servers"] == [{"url": "http://localhost/ogc"}]
    items = api["paths"]["/collections/{collectionId}/items"]["get"]
    params = {p["name"]: p for p in items["parameters"]}
    assert {"bbox", "datetime", "limit", "label", "min_score", "model_version"} <= set(params)
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10_000,
        "default": 10,
    }
    classes = client.get("/ogc/conformance").get_json()["conformsTo"]
    assert {CORE, GEOJSON_CLASS, OAS30} <= set(classes)


def test_collections_describe_their_extent_from_the_data(client, seeded) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/ogc/collections").get_json()
    by_id = {c["id"]: c for c in body["collections"]}
    assert set(by_id) == {"detections", "photos"}
    located = _located(seeded)
    photos = [p for p in seeded.photos if p.lat is not None]
    for kind, points in (("detections", [d.photo for d in located]), ("photos", photos)):
        c = by_id[kind]
        assert c == client.get(f"/ogc/collections/{kind}").get_json()
        assert c["itemType"] == "feature"
        assert c["extent"]["spatial"]["bbox"] == [
            [
                min(p.lon for p in points),
                min(p.lat for p in points),
                max(p.lon for p in points),
                max(p.lat for p in points),
            ]
        ]
        dated = [p.taken_at for p in points if p.taken_at is not None]
        assert c["extent"]["temporal"]["interval"] == [
            [min(dated).isoformat() + "Z", max(dated).isoformat() + "Z"]
        ]
        links = _links(c)
        assert links["items"]["href"] == f"http://localhost/ogc/collections/{kind}/items"
        assert links["items"]["type"] == "application/geo+json"
        queryables = client.get(
            urlsplit(links["http://www.opengis.net/def/rel/ogc/1.0/queryables"]["href"]).path
        )
        assert queryables.mimetype == "application/schema+json"
        schema = queryables.get_json()
        assert schema["type"] == "object"
        assert {"geometry", "label", "score", "taken_at"} <= set(schema["properties"])


def test_items_pages_carry_every_feature_once_with_absolute_links(client, seeded) -> None:  # type: ignore[no-untyped-def]
    expected = sorted(d.id for d in _located(seeded) if d.score >= 0.2)
    response = client.get("/ogc/collections/detections/items", query_string={"min_score": "0.2"})
    assert response.mimetype == "application/geo+json"
    body = response.get_json()
    assert body["numberReturned"] == len(body["features"]) == 10  # the standard's default
    seen: list[int] = []
    url = "/ogc/collections/detections/items?min_score=0.2&limit=9"
    pages = 0
    while True:
        body = client.get(url).get_json()
        pages += 1
        assert body["type"] == "FeatureCollection"
        assert datetime.fromisoformat(body["timeStamp"])
        assert body["numberMatched"] == len(expected)
        assert body["numberReturned"] == len(body["features"]) <= 9
        seen += [f["id"] for f in body["features"]]
        links = _links(body)
        assert links["self"]["href"].startswith(
            "http://localhost/ogc/collections/detections/items?"
        )
        assert _path(links["self"]["href"]) == url
        if "next" not in links:
            break
        assert links["next"]["href"].startswith("http://localhost/")
        assert links["next"]["type"] == "application/geo+json"
        url = _path(links["next"]["href"])
        assert "min_score=0.2" in url and "limit=9" in url
    assert seen == expected
    assert pages == -(-len(expected) // 9)


def test_items_match_the_detections_endpoint_and_filters(client, seeded) -> None:  # type: ignore[no-untyped-def]
    for query in (
        {"label": ["Drink can", "Cigarette"]},
        {"supercategory": "Bottle", "min_score": "0.3"},
        {"model_version": "seed:2"},
        {"bbox": "2.25,48.80,2.45,48.92"},
    ):
        params = {**query, "limit": 10_000}
        ours = client.get("/ogc/collections/detections/items", query_string=params).get_json()
        theirs = client.get("/api/v1/detections", query_string=params).get_json()
        assert ours["features"] == theirs["features"]
        assert ours["numberMatched"] == theirs["numberMatched"] > 0
    photos = client.get(
        "/ogc/collections/photos/items", query_string={"status": "queued", "limit": 100}
    ).get_json()
    assert {f["id"] for f in photos["features"]} == {
        p.id for p in seeded.photos if p.lat is not None and p.status == "queued"
    }


def _taken(p: SeedPhoto, since: datetime | None, until: datetime | None) -> bool:
    """Inclusive on both ends, as OGC intervals are."""
    if p.taken_at is None:
        return False
    return (since is None or p.taken_at >= since) and (until is None or p.taken_at <= until)


def test_datetime_takes_instants_and_intervals(client, seeded) -> None:  # type: ignore[no-untyped-def]
    located = _located(seeded)
    instant = next(d.photo.taken_at for d in located if d.photo.taken_at is not None)
    day = instant.replace(hour=0)
    cases = [
        (instant.isoformat(), instant, instant),
        (instant.isoformat() + "Z", instant, instant),
        (day.date().isoformat(), day, day + timedelta(days=1) - timedelta(microseconds=1)),
        ("2024-02-01/2024-03-15T12:00:00Z", datetime(2024, 2, 1), datetime(2024, 3, 15, 12)),
        ("2024-03-01/..", datetime(2024, 3, 1), None),
        ("../2024-02-01T00:00:00Z", None, datetime(2024, 2, 1)),
        ("/2024-02-01T00:00:00Z", None, datetime(2024, 2, 1)),
    ]
    for raw, since, until in cases:
        expected = {d.id for d in located if _taken(d.photo, since, until)}
        assert expected, raw
        body = client.get(
            "/ogc/collections/detections/items", query_string={"datetime": raw, "limit": 10_000}
        ).get_json()
        assert {f["id"] for f in body["features"]} == expected, raw
        assert body["numberMatched"] == len(expected)


def test_one_feature_by_id_and_404s(client, seeded) -> None:  # type: ignore[no-untyped-def]
    det = _located(seeded)[0]
    response = client.get(f"/ogc/collections/detections/items/{det.id}")
    assert response.status_code == 200 and response.mimetype == "application/geo+json"
    body = response.get_json()
    assert body["type"] == "Feature" and body["id"] == det.id
    assert body["geometry"]["coordinates"] == [det.photo.lon, det.photo.lat]
    props = body["properties"]
    assert props["label"] == det.label and props["supercategory"] == supercategory_of(det.label)
    assert all(isinstance(props[k], float) for k in ("box_x1", "box_y1", "box_x2", "box_y2"))
    assert "bbox" not in props
    assert (
        _links(body)["self"]["href"]
        == f"http://localhost/ogc/collections/detections/items/{det.id}"
    )
    unlocated = next(p for p in seeded.photos if p.lat is None)
    for path in (
        "/ogc/collections/lakes",
        "/ogc/collections/lakes/items",
        "/ogc/collections/detections/items/999999999",
        "/ogc/collections/detections/items/abc",
        "/ogc/collections/detections/items/99999999999999999999999",
        "/ogc/collections/detections/items/%C2%B2",  # a digit to str.isdigit, not to int()
        f"/ogc/collections/photos/items/{unlocated.id}",  # not on the map, not in the collection
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"


EPSG4326 = "http://www.opengis.net/def/crs/EPSG/0/4326"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def test_epsg_4326_swaps_axes_of_answers_and_bbox(client, seeded) -> None:  # type: ignore[no-untyped-def]
    assert (
        "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs"
        in (client.get("/ogc/conformance").get_json()["conformsTo"])
    )
    c = client.get("/ogc/collections/detections").get_json()
    assert c["crs"] == [CRS84, EPSG4326] and c["storageCrs"] == CRS84
    box = (2.25, 48.80, 2.45, 48.92)
    expected = {d.id: d for d in _located(seeded) if box[0] <= d.photo.lon <= box[2]}
    expected = {i: d for i, d in expected.items() if box[1] <= d.photo.lat <= box[3]}
    assert expected
    plain = client.get(
        "/ogc/collections/detections/items",
        query_string={"bbox": ",".join(map(str, box)), "limit": 1000},
    )
    assert plain.headers["Content-Crs"] == f"<{CRS84}>"
    swapped = client.get(
        "/ogc/collections/detections/items",
        query_string={
            "bbox": f"{box[1]},{box[0]},{box[3]},{box[2]}",
            "bbox-crs": EPSG4326,
            "crs": EPSG4326,
            "limit": 1000,
        },
    )
    assert swapped.headers["Content-Crs"] == f"<{EPSG4326}>"
    for response in (plain, swapped):
        assert {f["id"] for f in response.get_json()["features"]} == set(expected)
    for f in swapped.get_json()["features"]:
        photo = expected[f["id"]].photo
        assert f["geometry"]["coordinates"] == [photo.lat, photo.lon]
    one = client.get(
        f"/ogc/collections/detections/items/{min(expected)}", query_string={"crs": EPSG4326}
    )
    photo = expected[min(expected)].photo
    assert one.get_json()["geometry"]["coordinates"] == [photo.lat, photo.lon]
    assert one.headers["Content-Crs"] == f"<{EPSG4326}>"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"bbox": "1,2,3"}, "invalid_bbox"),
        ({"datetime": "yesterday"}, "invalid_datetime"),
        ({"datetime": "../.."}, "invalid_datetime"),
        ({"datetime": "2024-05-01/2024-04-01"}, "invalid_datetime"),
        ({"datetime": "2024-01-01/2024-02-01/2024-03-01"}, "invalid_datetime"),
        ({"cursor": "nope"}, "invalid_cursor"),
        ({"min_score": "2"}, "invalid_min_score"),
        ({"since": "2024-01-01"}, "unknown_parameter"),  # the standard's name is datetime
        ({"colour": "red"}, "unknown_parameter"),
        ({"f": "xml"}, "invalid_f"),
        ({"status": "done"}, "unknown_parameter"),  # photos only
        ({"crs": "EPSG:3857"}, "invalid_crs"),
        ({"bbox": "1,2,3,4", "bbox-crs": "urn:ogc:def:crs:EPSG::3857"}, "invalid_bbox_crs"),
        ({"bbox": "48.8,2.3,48.9", "bbox-crs": EPSG4326}, "invalid_bbox"),
    ],
)
def test_bad_item_parameters_get_a_400(client, query, code) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/ogc/collections/detections/items", query_string=query)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == code


def test_limit_above_the_maximum_is_served_as_the_maximum(client, seeded) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/ogc/collections/photos/items", query_string={"limit": 50_000}).get_json()
    assert body["numberReturned"] == sum(1 for p in seeded.photos if p.lat is not None)


def test_links_use_the_configured_public_url(pg_settings, pg_clean, seeded) -> None:  # type: ignore[no-untyped-def]
    app = create_app(replace(pg_settings, public_url="https://maps.example.org/trashmap"))
    try:
        client = app.test_client()
        body = client.get(
            "/ogc/collections/detections/items",
            query_string={"limit": 5},
            headers={"Host": "internal:8000"},
        ).get_json()
        links = _links(body)
        assert links["self"]["href"] == (
            "https://maps.example.org/trashmap/ogc/collections/detections/items?limit=5"
        )
        assert links["next"]["href"].startswith(
            "https://maps.example.org/trashmap/ogc/collections/detections/items?limit=5&cursor="
        )
        landing = _links(client.get("/ogc").get_json())
        assert landing["data"]["href"] == "https://maps.example.org/trashmap/ogc/collections"
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_prev_links_walk_back_to_the_first_page_through_the_same_pages(  # type: ignore[no-untyped-def]
    pg_settings, pg_clean, seeded
) -> None:
    public = "https://maps.example.org/trashmap"  # a proxy's prefix: the app sees /ogc/...
    app = create_app(replace(pg_settings, public_url=public))
    base = f"{public}/ogc/collections/detections/items?"
    try:
        client = app.test_client()

        def page(url: str) -> tuple[list[int], dict[str, dict]]:  # type: ignore[type-arg]
            body = client.get(url, headers={"Host": "internal:8000"}).get_json()
            links = _links(body)
            for rel in ("next", "prev"):
                if rel in links:
                    assert links[rel]["href"].startswith(base + "min_score=0.2&limit=4&cursor=")
            return [f["id"] for f in body["features"]], links

        ids, links = page("/ogc/collections/detections/items?min_score=0.2&limit=4")
        assert "prev" not in links  # the first page
        forward = [ids]
        while "next" in links:
            ids, links = page(links["next"]["href"].removeprefix(public))
            forward.append(ids)
        backward = [ids]
        while "prev" in links:
            ids, links = page(links["prev"]["href"].removeprefix(public))
            backward.append(ids)
        assert len(forward) >= 3
        assert backward == forward[::-1]
        assert sum(forward, []) == sorted(d.id for d in _located(seeded) if d.score >= 0.2)
        assert "next" in links  # the first page, reached backwards, still leads on
    finally:
        app.extensions["trashmap"].engine.dispose()


def test_ogc_reads_share_the_api_rate_limit(pg_settings, pg_clean) -> None:  # type: ignore[no-untyped-def]
    settings = replace(
        pg_settings,
        rate_limit_enabled=True,
        rate_limit_read="3/minute",
        queue_name=f"trashmap.test.{uuid.uuid4().hex[:8]}",  # fresh counters in Redis
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        answers = [client.get("/ogc/collections/detections/items") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[-1].get_json()["error"]["code"] == "too_many_requests"
    finally:
        app.extensions["trashmap"].engine.dispose()


# --- GDAL's OAPIF driver against a running server -------------------------------------

SEEDED = 700
PAGE = 100


def seed_many(sessions, count: int) -> dict[int, tuple[str, float, int]]:  # type: ignore[no-untyped-def]
    """`count` detections, seven a photo; id -> (label, score, photo_id)."""
    out: dict[int, tuple[str, float, int]] = {}
    with session_scope(sessions) as session:
        # Model versions outlive pg_clean: the GDAL and QGIS tests share this one.
        model = session.scalar(
            select(ModelVersion).where(ModelVersion.name == "gdal", ModelVersion.version == "1")
        )
        if model is None:
            model = ModelVersion(
                name="gdal",
                version="1",
                arch="fasterrcnn_mobilenet_v3_large_fpn",
                class_names=LABELS,
            )
            session.add(model)
            session.flush()
        for i in range(count // 7):
            photo = Photo(
                sha256=hashlib.sha256(f"gdal-{i}".encode()).hexdigest(),
                content_type="image/jpeg",
                byte_size=1000,
                width=640,
                height=480,
                lat=48.8 + i * 0.001,
                lon=2.3 + i * 0.001,
                location_source="exif",
                taken_at=datetime(2024, 5, 1, 8) + timedelta(hours=i),
                status="done",
                model_version_id=model.id,
                warnings=[],
            )
            session.add(photo)
            session.flush()
            for j in range(7):
                det = Detection(
                    photo_id=photo.id,
                    model_version_id=model.id,
                    label=LABELS[(i + j) % len(LABELS)],
                    score=round(0.1 + 0.1 * j, 2),
                    x1=10.0 * j,
                    y1=5.0,
                    x2=10.0 * j + 30.5,
                    y2=40.25,
                    lat=photo.lat,
                    lon=photo.lon,
                )
                session.add(det)
                session.flush()
                out[det.id] = (det.label, det.score, photo.id)
    return out


def _gdal(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_gdal_reads_every_page_with_typed_fields(pg_settings, pg_sessions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if shutil.which("ogrinfo") is None or shutil.which("ogr2ogr") is None:
        pytest.skip(reason="GDAL command-line tools missing: apt-get install gdal-bin")
    pyogrio = pytest.importorskip("pyogrio", reason="pip install pyogrio (the web extra)")
    from tests.reliability.servers import WebServer

    seeded = seed_many(pg_sessions, SEEDED)
    env = settings_env(pg_settings)
    env["TRASHMAP_RATE_LIMIT_ENABLED"] = "false"
    env.pop("TRASHMAP_PUBLIC_URL", None)  # links from the request: the address GDAL used
    server = WebServer(env, tmp_path / "web.log", workers=2)
    try:
        server.wait_listening()
        landing = f"OAPIF:{server.url}/ogc"
        info = _gdal("ogrinfo", "-ro", "-al", "-so", "-oo", f"PAGE_SIZE={PAGE}", landing)
        assert "Layer name: detections" in info and "Layer name: photos" in info
        assert f"Feature Count: {SEEDED}" in info, info
        out = tmp_path / "out.gpkg"
        _gdal("ogr2ogr", "-f", "GPKG", str(out), landing, "-oo", f"PAGE_SIZE={PAGE}", "detections")
    finally:
        server.stop()
    meta = pyogrio.read_info(out, layer="detections")
    assert meta["features"] == SEEDED
    assert meta["crs"] in ("EPSG:4326", "OGC:CRS84")
    types = dict(zip(meta["fields"], meta["ogr_types"], strict=True))
    assert types["score"] == "OFTReal"
    assert types["label"] == "OFTString"
    assert types["photo_id"] in ("OFTInteger", "OFTInteger64")
    assert types["taken_at"] == "OFTDateTime"
    assert all(types[k] == "OFTReal" for k in ("box_x1", "box_y1", "box_x2", "box_y2"))
    assert "bbox" not in types
    read_meta, fids, _geometry, columns = pyogrio.raw.read(
        out, layer="detections", columns=["label", "score", "photo_id"], return_fids=True
    )
    by_name = dict(zip(read_meta["fields"], columns, strict=True))
    # Every feature once, across all seven pages, with the values the database holds.
    values = zip(by_name["label"], by_name["score"], by_name["photo_id"], strict=True)
    assert len(set(fids)) == SEEDED
    assert sorted((str(a), float(b), int(c)) for a, b, c in values) == sorted(seeded.values())
