"""The map and upload pages in headless Chromium (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from tests.conftest import PHOTOS_DIR, post_photo
from trashmap.db import session_scope
from trashmap.models import Detection, ModelVersion

CHROMIUM = os.environ.get("TRASHMAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
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


def test_map_shows_markers_filters_them_and_opens_a_photo(
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
    located = [d for d in seeded.detections if d.photo.lat is not None]
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(f"{live_server.url}/map")
    page.wait_for_selector("body[data-loaded]", state="attached", timeout=15_000)
    markers = page.locator("path.tm-detection")
    assert markers.count() == len(located) + 2
    assert "detections in view" in page.inner_text("#summary")
    assert page.locator("#legend .legend-row").count() >= 3
    _shot(page, "map", tmp_path)

    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#f-supercategory", "Bottle")
    _wait_reload(page, before)
    bottles = [d for d in located if d.label in ("Clear plastic bottle", "Glass bottle")]
    expect(markers).to_have_count(len(bottles), timeout=15_000)

    before = page.evaluate("document.body.dataset.loaded")
    page.select_option("#f-supercategory", "")
    page.fill("#f-label", "Pop tab")
    page.dispatch_event("#f-label", "change")
    _wait_reload(page, before)
    # Clearing the kind and typing the label are two reloads; wait for the last one's result.
    expect(markers).to_have_count(2, timeout=15_000)
    markers.first.click(force=True)
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
