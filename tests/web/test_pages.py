"""The map and upload pages in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from tests.conftest import PHOTOS_DIR, embedded_settings, post_photo
from tests.web.conftest import LABELS, LiveServer, seed_map
from trashmap import migrate
from trashmap.db import make_engine, make_session_factory, session_scope
from trashmap.models import Detection, ModelVersion, Photo
from web import create_app

CHROMIUM = os.environ.get("TRASHMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    # MapLibre draws with WebGL: SwiftShader renders it in software, with no GPU.
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# 43.4674483, 11.8851266 in MANIFEST.tsv
GPS_PHOTO = PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg"
NO_GPS_PHOTO = PHOTOS_DIR / "exifsamples__jpg_orientation_landscape_3.jpg"
SCREENSHOTS = (
    Path(os.environ.get("TRASHMAP_SCREENSHOTS", ""))
    if os.environ.get("TRASHMAP_SCREENSHOTS")
    else None
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None,
        reason=f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test does)",
    ),
]


@pytest.fixture
def browser() -> Iterator:  # type: ignore[type-arg]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _shot(page, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = SCREENSHOTS or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


# Waits use selectors, not wait_for_function: the pages' CSP forbids the eval it relies on.
def _wait_reload(page, before: str | None) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector(
        f'body[data-loaded]:not([data-loaded="{before}"])', state="attached", timeout=15_000
    )


def _seed_many(sessions, n: int = 10_000, seed: int = 3) -> int:  # type: ignore[no-untyped-def]
    """n detections on n / 10 photos spread over Europe and Africa, inserted in bulk."""
    rng = random.Random(seed)
    with session_scope(sessions) as session:
        model = ModelVersion(
            name="bulk", version="1", arch="fasterrcnn_mobilenet_v3_large_fpn", class_names=LABELS
        )
        session.add(model)
        session.flush()
        photos = [
            {
                "sha256": hashlib.sha256(f"bulk-{seed}-{i}".encode()).hexdigest(),
                "content_type": "image/jpeg",
                "byte_size": 1000,
                "width": 640,
                "height": 480,
                "lat": rng.uniform(-30, 60),
                "lon": rng.uniform(-10, 40),
                "location_source": "exif",
                "status": "done",
                "warnings": [],
                "model_version_id": model.id,
            }
            for i in range(n // 10)
        ]
        ids = session.scalars(sa.insert(Photo).returning(Photo.id), photos).all()
        by_id = dict(zip(ids, photos, strict=True))
        rows = [
            {
                "photo_id": pid,
                "model_version_id": model.id,
                "label": rng.choice(LABELS),
                "score": rng.random(),
                "x1": 10.0,
                "y1": 10.0,
                "x2": 60.0,
                "y2": 60.0,
                "lat": by_id[pid]["lat"],
                "lon": by_id[pid]["lon"],
            }
            for pid in ids
            for _ in range(10)
        ]
        session.execute(sa.insert(Detection), rows)
    return len(rows)


def _offline(page) -> None:  # type: ignore[no-untyped-def]
    """No OpenStreetMap, as on a machine without internet (the same on every machine)."""
    page.route("https://*.tile.openstreetmap.org/**", lambda route: route.abort())


def _rendered(page, layer: str) -> list[dict]:  # type: ignore[type-arg]
    return page.evaluate(
        "layer => trashmapMap.queryRenderedFeatures({layers: [layer]}).map(f => f.properties)",
        layer,
    )


def _open_map(browser, url: str, width: int, height: int):  # type: ignore[no-untyped-def]
    phone = width <= 600
    context = browser.new_context(
        viewport={"width": width, "height": height}, is_mobile=phone, has_touch=phone
    )
    page = context.new_page()
    _offline(page)
    page.goto(f"{url}/map")
    page.wait_for_selector("body[data-loaded]", state="attached", timeout=30_000)
    return context, page


def test_map_draws_vector_tiles_at_desktop_and_phone_widths(
    browser, live_server, pg_sessions, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    total = _seed_many(pg_sessions)
    for width, height in [(1280, 720), (390, 844)]:
        context, page = _open_map(browser, live_server.url, width, height)
        assert page.get_attribute("#map-page", "data-view") == "tiles"
        counts = [f["count"] for f in _rendered(page, "clusters")]
        # Every detection is in view; a cluster near a tile edge may be drawn twice.
        assert sum(counts) >= total and len(counts) > 1
        assert page.inner_text("#summary") == f"{total} detections in view"
        # The bundled base map: land drawn, and a note that OpenStreetMap is not there.
        assert _rendered(page, "land")
        expect(page.locator("#basemap-note")).to_be_visible()
        assert page.get_attribute("body", "data-basemap") == "offline"
        _shot(page, f"map-{width}", tmp_path)
        if width <= 600:
            map_box = page.locator("#map").bounding_box()
            sheet = page.locator("#filters").bounding_box()
            covered = max(0.0, map_box["y"] + map_box["height"] - sheet["y"]) * map_box["width"]
            share = (map_box["width"] * map_box["height"] - covered) / (width * height)
            assert share >= 0.6, f"the map gets {share:.0%} of the screen"
            expect(page.locator("#f-supercategory")).to_be_hidden()
            page.click("#filters-toggle")
            expect(page.locator("#f-supercategory")).to_be_visible()
            _shot(page, f"map-{width}-filters", tmp_path)
        # A filter restyles the same page: fewer detections, no reload.
        page.evaluate("window.tmSamePage = true")
        before = page.evaluate("document.body.dataset.loaded")
        page.select_option("#f-supercategory", "Bottle")
        _wait_reload(page, before)
        bottles = sum(f["count"] for f in _rendered(page, "clusters"))
        assert 0 < bottles < sum(counts)
        assert page.evaluate("window.tmSamePage") is True
        context.close()


def test_map_shows_detections_filters_them_and_opens_a_photo(
    browser, live_server, client, seeded, pg_sessions, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    photo = post_photo(client, GPS_PHOTO).get_json()
    with session_scope(pg_sessions) as session:
        model = session.scalar(sa.select(ModelVersion).where(ModelVersion.name == "seed"))
        for i, box in enumerate([(40, 50, 200, 220), (300, 100, 420, 260)]):
            session.add(
                Detection(
                    photo_id=photo["id"],
                    model_version_id=model.id,
                    label="Pop tab",
                    score=0.9 - i / 10,
                    x1=box[0],
                    y1=box[1],
                    x2=box[2],
                    y2=box[3],
                    lat=photo["location"]["lat"],
                    lon=photo["location"]["lon"],
                )
            )
        session.execute(
            sa.text("UPDATE photos SET model_version_id = :m, status = 'done' WHERE id = :p"),
            {"m": model.id, "p": photo["id"]},
        )
    context, page = _open_map(browser, live_server.url, 1280, 720)
    assert page.locator("#legend .legend-row").count() >= 3
    lat, lon = photo["location"]["lat"], photo["location"]["lon"]

    # Zoomed in on a seeded city: one point per detection, each with its label.
    paris = [d for d in seeded.detections if d.photo.lat is not None and d.photo.lat > 45]
    before = page.evaluate("document.body.dataset.loaded")
    page.evaluate("c => trashmapMap.jumpTo({center: c, zoom: 11})", [2.3522, 48.8566])
    _wait_reload(page, before)
    page.evaluate("c => trashmapMap.jumpTo({center: c, zoom: 14.5})", [2.3522, 48.8566])
    page.wait_for_timeout(200)
    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#f-supercategory", "Bottle")
    _wait_reload(page, before)
    shown = _rendered(page, "points")
    bottles = {"Clear plastic bottle", "Glass bottle"}
    assert shown and {f["label"] for f in shown} <= bottles
    assert {f["id"] for f in shown} <= {d.id for d in paris if d.label in bottles}
    _shot(page, "map-detail", tmp_path)

    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#f-supercategory", "")
    page.fill("#f-label", "Pop tab")
    page.dispatch_event("#f-label", "change")
    _wait_reload(page, before)
    before = page.evaluate("document.body.dataset.loaded")
    page.evaluate("c => trashmapMap.jumpTo({center: c, zoom: 16})", [lon, lat])
    _wait_reload(page, before)
    shown = _rendered(page, "points")
    assert sorted(f["label"] for f in shown) == ["Pop tab", "Pop tab"]
    point = page.evaluate("c => trashmapMap.project(c)", [lon, lat])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    page.wait_for_selector(".popup-photo img", timeout=10_000)
    image = page.locator(".popup-photo img")
    for _ in range(100):
        if image.evaluate("img => img.complete && img.naturalWidth > 0"):
            break
        page.wait_for_timeout(100)
    assert image.evaluate("img => img.naturalWidth") > 0
    assert page.locator(".popup-photo .box").count() == 2
    assert page.locator(".popup-photo .box.selected").count() == 1
    assert "Pop tab" in page.inner_text(".popup-meta")
    _shot(page, "map-popup", tmp_path)
    context.close()


def test_map_falls_back_to_geojson_without_vector_tiles(browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = embedded_settings(tmp_path)
    migrate.upgrade(settings)
    engine = make_engine(settings)
    try:
        seeded = seed_map(make_session_factory(engine))
        with LiveServer(create_app(settings)) as server:
            context, page = _open_map(browser, server.url, 1280, 720)
            assert page.get_attribute("#map-page", "data-view") == "geojson"
            located = [d for d in seeded.detections if d.photo.lon is not None]
            in_view = [d for d in located if d.photo.lon < 100]  # Sydney is off screen
            assert page.inner_text("#summary") == f"{len(in_view)} detections in view"
            assert len(_rendered(page, "points")) == len(in_view)
            _shot(page, "map-sqlite", tmp_path)
            context.close()
    finally:
        engine.dispose()


def test_upload_page_shows_location_and_status(browser, live_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(
        viewport={"width": 412, "height": 860},
        geolocation={"latitude": -33.8568, "longitude": 151.2153},
        permissions=["geolocation"],
        is_mobile=True,
        has_touch=True,
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/upload")
    page.set_input_files("#pick", [str(GPS_PHOTO), str(NO_GPS_PHOTO)])
    rows = page.locator("#uploads li")
    page.wait_for_selector("#uploads li[data-photo-id] >> nth=1", timeout=30_000)
    by_name = {rows.nth(i).locator(".name").inner_text(): rows.nth(i) for i in range(2)}
    with_gps, without = by_name[GPS_PHOTO.name], by_name[NO_GPS_PHOTO.name]
    assert "43.46745, 11.88513 (from the photo's GPS)" in with_gps.locator(".location").inner_text()
    assert "-33.85680, 151.21530 (from your device)" in without.locator(".location").inner_text()
    for row in (with_gps, without):
        assert row.locator(".status").inner_text() in ("queued", "processing", "done")
        assert row.locator("progress").get_attribute("value") == "100"
    _shot(page, "upload", tmp_path)
    context.close()


def test_map_banner_marks_detections_of_an_untrained_model(
    browser, live_server, client, seeded, pg_sessions
) -> None:  # type: ignore[no-untyped-def]
    from trashmap.models import UNTRAINED_KEY

    photo = post_photo(client, GPS_PHOTO).get_json()
    with session_scope(pg_sessions) as session:
        random_model = ModelVersion(
            name="untrained",
            version="test",
            arch="fasterrcnn_mobilenet_v3_large_fpn",
            class_names=["class_1"],
            metrics={UNTRAINED_KEY: True},
        )
        session.add(random_model)
        session.flush()
        session.add(
            Detection(
                photo_id=photo["id"],
                model_version_id=random_model.id,
                label="class_1",
                score=0.99,
                x1=10,
                y1=10,
                x2=50,
                y2=50,
                lat=photo["location"]["lat"],
                lon=photo["location"]["lon"],
            )
        )
        session.execute(
            sa.text("UPDATE photos SET model_version_id = :m, status = 'done' WHERE id = :p"),
            {"m": random_model.id, "p": photo["id"]},
        )
    assert client.get(f"/api/v1/photos/{photo['id']}").get_json()["model"]["untrained"] is True
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{live_server.url}/map")
    page.wait_for_selector("body[data-loaded]", state="attached", timeout=15_000)
    banner = page.locator("#untrained-banner")
    expect(banner).to_be_visible()
    assert "UNTRAINED" in banner.inner_text()

    # Only the seeded (trained) model's bottles in view: no banner.
    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#f-supercategory", "Bottle")
    _wait_reload(page, before)
    expect(banner).to_be_hidden()
