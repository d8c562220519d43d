"""Reviewing: the queue, verified annotation sets with their history, the verified filter,
the COCO export (opened with pycocotools) and versions scored on verified photos."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image

from tests.conftest import ROOT, post_photo, settings_env
from tests.web.conftest import make_token
from trashmap.cli import cli
from trashmap.db import session_scope
from trashmap.models import AnnotationSet, Detection, ModelVersion, Photo

coco_api = pytest.importorskip("pycocotools.coco", reason="pip install pycocotools (web extra)")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _version(session, name: str, classes: list[str]) -> ModelVersion:  # type: ignore[no-untyped-def]
    row = session.scalar(
        sa.select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == "1")
    )
    if row is None:
        row = ModelVersion(name=name, version="1", arch="test", class_names=classes)
        session.add(row)
        session.flush()
    return row


def _photo(session, n: int, version: ModelVersion | None, dets: list[tuple]) -> int:  # type: ignore[no-untyped-def,type-arg]
    """A done 640x480 photo with detections (label, score, x1, y1, x2, y2) of `version`."""
    photo = Photo(
        sha256=hashlib.sha256(f"review-{n}".encode()).hexdigest(),
        content_type="image/jpeg",
        byte_size=1,
        width=640,
        height=480,
        lat=48.85 + n / 1000,
        lon=2.35,
        location_source="exif",
        status="done",
        warnings=[],
        model_version_id=version.id if version else None,
    )
    session.add(photo)
    session.flush()
    for label, score, x1, y1, x2, y2 in dets:
        assert version is not None
        session.add(
            Detection(
                photo_id=photo.id,
                model_version_id=version.id,
                label=label,
                score=score,
                x1=x1,
                y1=y1,
                x2=x2,
                y2=y2,
                lat=photo.lat,
                lon=photo.lon,
            )
        )
    return photo.id


@pytest.fixture
def review_token(pg_sessions) -> str:  # type: ignore[no-untyped-def]
    return make_token(pg_sessions, "review", name="reviewer-ana")


def test_review_routes_need_the_review_scope(client, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        photo_id = _photo(session, 1, None, [])
    read = make_token(pg_sessions, "read:stats", "export", "write", name="not-a-reviewer")
    body = {"annotations": [], "no_litter": True}
    calls = [
        ("get", "/api/v1/review/queue", None),
        ("get", f"/api/v1/photos/{photo_id}/annotations", None),
        ("put", f"/api/v1/photos/{photo_id}/annotations", body),
    ]
    for method, url, json_body in calls:
        anonymous = getattr(client, method)(url, json=json_body)
        assert anonymous.status_code == 401, url
        assert anonymous.get_json()["error"]["code"] == "api_key_required"
        denied = getattr(client, method)(url, json=json_body, headers=_auth(read))
        assert denied.status_code == 403, url
        assert denied.get_json()["error"]["code"] == "insufficient_scope"
    with session_scope(pg_sessions) as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AnnotationSet)) == 0


def test_a_set_is_validated_stored_and_kept_in_the_history(
    client, pg_sessions, review_token
) -> None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        version = _version(session, "review-model", ["class_1", "class_2"])
        photo_id = _photo(session, 2, version, [("class_1", 0.4, 10, 10, 50, 60)])
    url = f"/api/v1/photos/{photo_id}/annotations"
    before = client.get(f"/api/v1/photos/{photo_id}").get_json()
    assert before["review"] == {"status": "unreviewed", "reviewed_at": None, "by": None}
    bad = {
        "invalid_label": {"annotations": [{"label": "Spaceship", "bbox": [1, 1, 5, 5]}]},
        "bbox_outside_photo": {"annotations": [{"label": "Cigarette", "bbox": [600, 1, 641, 5]}]},
        "invalid_bbox": {"annotations": [{"label": "Cigarette", "bbox": [5, 5, 1]}]},
        "invalid_no_litter": {
            "annotations": [{"label": "Cigarette", "bbox": [1, 1, 5, 5]}],
            "no_litter": True,
        },
        "empty_set": {"annotations": []},
        "unknown_field": {"annotations": [], "no_litter": True, "extra": 1},
    }
    for code, body in bad.items():
        response = client.put(url, json=body, headers=_auth(review_token))
        assert response.status_code == 400, (code, response.get_json())
        assert response.get_json()["error"]["code"] == code
    assert client.put(url, data="nope", headers=_auth(review_token)).status_code == 400

    first = {
        "annotations": [
            {"label": "class_2", "bbox": [12, 10, 52, 60]},  # a model's class
            {"label": "Cigarette", "bbox": [100, 100, 120.5, 140]},  # a TACO category
            {"label": "Bottle", "bbox": [0, 0, 640, 480]},  # a taco10 class; the whole frame
        ],
        "no_litter": False,
    }
    stored = client.put(url, json=first, headers=_auth(review_token))
    assert stored.status_code == 200, stored.get_json()
    assert stored.get_json()["created"] is True
    assert stored.get_json()["annotations"] == first["annotations"]
    assert stored.get_json()["by"] == "reviewer-ana"
    again = client.put(url, json=first, headers=_auth(review_token))
    assert again.status_code == 200 and again.get_json()["created"] is False
    second = {"annotations": [], "no_litter": True}
    assert client.put(url, json=second, headers=_auth(review_token)).get_json()["created"]

    got = client.get(url, headers=_auth(review_token)).get_json()
    assert got["current"]["no_litter"] is True and got["current"]["annotations"] == []
    assert [len(s["annotations"]) for s in got["history"]] == [0, 3]
    assert got["history"][1]["annotations"] == first["annotations"]
    after = client.get(f"/api/v1/photos/{photo_id}").get_json()
    assert after["review"]["status"] == "verified"
    assert after["review"]["by"] == "reviewer-ana"
    assert after["review"]["reviewed_at"] == got["current"]["reviewed_at"]
    assert (
        client.put(
            "/api/v1/photos/999999/annotations", json=second, headers=_auth(review_token)
        ).status_code
        == 404
    )


def test_the_queue_ranks_uncertain_disagreeing_and_rare_photos_first(
    client, pg_sessions, review_token
) -> None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        a = _version(session, "queue-a", ["Cigarette", "Drink can"])
        b = _version(session, "queue-b", ["Cigarette", "Drink can"])
        sure = _photo(session, 10, a, [("Drink can", 0.99, 10, 10, 50, 50)])
        unsure = _photo(session, 11, a, [("Drink can", 0.5, 10, 10, 50, 50)])
        disputed = _photo(session, 12, a, [("Drink can", 0.99, 10, 10, 50, 50)])
        # Version b saw a cigarette where a saw a can: they disagree on every box.
        session.add(
            Detection(
                photo_id=disputed,
                model_version_id=b.id,
                label="Cigarette",
                score=0.99,
                x1=10,
                y1=10,
                x2=50,
                y2=50,
            )
        )
        rare = _photo(session, 13, a, [("Cigarette", 0.99, 10, 10, 50, 50)])
        reviewed = _photo(session, 14, a, [("Drink can", 0.5, 10, 10, 50, 50)])
        queued = _photo(session, 15, a, [])
        session.get(Photo, queued).status = "queued"  # type: ignore[union-attr]
    # Two verified cans make "Drink can" common and the cigarette photo rare.
    for photo_id in (reviewed,):
        body = {"annotations": [{"label": "Drink can", "bbox": [1, 1, 9, 9]}] * 1}
        assert (
            client.put(
                f"/api/v1/photos/{photo_id}/annotations", json=body, headers=_auth(review_token)
            ).status_code
            == 200
        )
    response = client.get("/api/v1/review/queue", headers=_auth(review_token))
    assert response.status_code == 200, response.get_json()
    photos = response.get_json()["photos"]
    order = [p["id"] for p in photos]
    assert set(order) == {sure, unsure, disputed, rare}  # not the reviewed nor the queued one
    priority = {p["id"]: p["priority"] for p in photos}
    assert priority[unsure]["uncertainty"] == pytest.approx(1.0)
    assert priority[sure]["uncertainty"] == pytest.approx(0.02, abs=1e-3)
    assert priority[disputed]["disagreement"] == pytest.approx(1.0)
    assert priority[rare]["rarity"] == pytest.approx(1.0)
    assert priority[sure]["rarity"] == pytest.approx(0.5)
    assert order[-1] == sure  # certain, agreed on and common: the least to learn from
    assert [p["priority"]["priority"] for p in photos] == sorted(
        (p["priority"]["priority"] for p in photos), reverse=True
    )
    unsure_json = next(p for p in photos if p["id"] == unsure)
    assert unsure_json["detections"] == [
        {"label": "Drink can", "score": 0.5, "bbox": [10.0, 10.0, 50.0, 50.0]}
    ]
    # Any version's cigarette counts; the disputed photo outranks the rare one.
    cigarettes = client.get("/api/v1/review/queue?label=Cigarette", headers=_auth(review_token))
    assert [p["id"] for p in cigarettes.get_json()["photos"]] == [disputed, rare]
    limited = client.get("/api/v1/review/queue?limit=1", headers=_auth(review_token))
    assert [p["id"] for p in limited.get_json()["photos"]] == order[:1]
    boxed = client.get("/api/v1/review/queue?bbox=0,0,1,1", headers=_auth(review_token))
    assert boxed.get_json()["photos"] == []
    for query in ("limit=0", "limit=x", "bbox=1,2", "colour=red"):
        bad = client.get(f"/api/v1/review/queue?{query}", headers=_auth(review_token))
        assert bad.status_code == 400, query


def test_the_verified_filter_and_stats_count_reviewed_photos(
    client, pg_sessions, review_token, staff_token
) -> None:  # type: ignore[no-untyped-def]
    with session_scope(pg_sessions) as session:
        version = _version(session, "filter-model", ["Cigarette"])
        ids = [_photo(session, 20 + i, version, [("Cigarette", 0.7, 1, 1, 9, 9)]) for i in range(3)]
    body = {"annotations": [], "no_litter": True}
    assert (
        client.put(
            f"/api/v1/photos/{ids[0]}/annotations", json=body, headers=_auth(review_token)
        ).status_code
        == 200
    )

    def photo_ids(query: str) -> set[int]:
        features = client.get(f"/api/v1/photos?{query}").get_json()["features"]
        return {f["id"] for f in features}

    assert photo_ids("verified=true") == {ids[0]}
    assert photo_ids("verified=false") == set(ids[1:])
    detections = client.get("/api/v1/detections?verified=true").get_json()["features"]
    assert {f["properties"]["photo_id"] for f in detections} == {ids[0]}
    assert client.get("/api/v1/photos?verified=yes").status_code == 400
    stats = client.get("/api/v1/stats", headers=_auth(staff_token)).get_json()
    assert stats["review"] == {"verified": 1, "unreviewed": 2}
    only = client.get("/api/v1/stats?verified=true", headers=_auth(staff_token)).get_json()
    assert only["review"] == {"verified": 1, "unreviewed": 0} and only["photos"] == 1


DATA = ROOT / "tests" / "data"
ROTATED = DATA / "photos" / "exifsamples__jpg_orientation_landscape_6.jpg"
PLAIN = DATA / "photos" / "exifsamples__jpg_gps_DSCN0010.jpg"


def _export(client, token: str, **query: str) -> zipfile.ZipFile:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/exports/coco", query_string=query, headers=_auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.get_data()))


def test_the_coco_export_holds_exactly_the_reviewed_boxes(
    client, pg_sessions, review_token, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rotated = post_photo(client, ROTATED).get_json()
    plain = post_photo(client, PLAIN).get_json()
    unreviewed = post_photo(client, DATA / "photos" / "exifsamples__jpg_gps_DSCN0012.jpg")
    assert unreviewed.status_code == 201
    # Stored 450x600 with EXIF orientation 6: its upright frame is 600x450.
    assert (rotated["width"], rotated["height"]) == (600, 450)
    boxes = [
        {"label": "Cigarette", "bbox": [10, 20, 110, 220]},
        {"label": "Drink can", "bbox": [5, rotated["height"] - 50, 45, rotated["height"]]},
    ]
    for photo, body in (
        (rotated, {"annotations": boxes}),
        (plain, {"annotations": [], "no_litter": True}),
    ):
        r = client.put(
            f"/api/v1/photos/{photo['id']}/annotations", json=body, headers=_auth(review_token)
        )
        assert r.status_code == 200, r.get_json()
    export_token = make_token(pg_sessions, "export", name="exporter")
    assert client.get("/api/v1/exports/coco", headers=_auth(review_token)).status_code == 403
    archive = _export(client, export_token)
    document = json.loads(archive.read("annotations.json"))
    (tmp_path / "annotations.json").write_bytes(archive.read("annotations.json"))
    coco = coco_api.COCO(str(tmp_path / "annotations.json"))
    assert sorted(coco.getImgIds()) == sorted([rotated["id"], plain["id"]])
    assert [c["name"] for c in document["categories"]] == ["Cigarette", "Drink can"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[rotated["id"]]))
    names = {c["id"]: c["name"] for c in document["categories"]}
    got = sorted((names[a["category_id"]], a["bbox"]) for a in anns)
    want = sorted(
        (b["label"], [x1, y1, x2 - x1, y2 - y1]) for b in boxes for x1, y1, x2, y2 in [b["bbox"]]
    )
    assert got == want
    assert coco.getAnnIds(imgIds=[plain["id"]]) == []
    for info in coco.loadImgs(coco.getImgIds()):
        with Image.open(io.BytesIO(archive.read(info["file_name"]))) as image:
            assert image.size == (info["width"], info["height"])
            assert not image.getexif()  # no orientation left to apply, no GPS
            assert "icc_profile" not in image.info
    labelled = json.loads(_export(client, export_token, label="Drink can").read("annotations.json"))
    assert [i["id"] for i in labelled["images"]] == [rotated["id"]]
    assert len(labelled["annotations"]) == 1
    boxed = json.loads(_export(client, export_token, bbox="11,43,12,44").read("annotations.json"))
    assert [i["id"] for i in boxed["images"]] == [plain["id"]]  # the one with a GPS position
    taco10 = json.loads(_export(client, export_token, classes="taco10").read("annotations.json"))
    assert len(taco10["categories"]) == 10
    assert {taco10["categories"][a["category_id"] - 1]["name"] for a in taco10["annotations"]} == {
        "Cigarette",
        "Can",
    }
    bad = client.get("/api/v1/exports/coco?classes=nope", headers=_auth(export_token))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_classes"

    out = tmp_path / "cli-export"
    result = CliRunner().invoke(
        cli,
        ["dataset", "export", "--out", str(out)],
        env=settings_env(client.application.extensions["trashmap"].settings),
    )
    assert result.exit_code == 0, result.output
    assert (
        json.loads((out / "annotations.json").read_text())["annotations"] == document["annotations"]
    )
    assert (out / f"images/{rotated['id']}.jpg").read_bytes() == archive.read(
        f"images/{rotated['id']}.jpg"
    )


def test_a_version_that_finds_the_verified_boxes_scores_map_one(
    client, pg_sessions, review_token, pg_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    truth = {
        0: [("Cigarette", 10, 10, 60, 80), ("Drink can", 200, 100, 300, 260)],
        1: [("Drink can", 50, 50, 150, 150)],
        2: [],  # no litter
    }
    with session_scope(pg_sessions) as session:
        exact = _version(session, "exact", ["Cigarette", "Drink can"])
        shifted = _version(session, "shifted", ["Cigarette", "Drink can"])
        ids = {}
        for n, boxes in truth.items():
            ids[n] = _photo(session, 40 + n, exact, [(lbl, 1.0, *box) for lbl, *box in boxes])
            for lbl, x1, y1, x2, y2 in boxes:  # right place for the can, wrong for the rest
                dx = 0 if lbl == "Drink can" else 40
                session.add(
                    Detection(
                        photo_id=ids[n],
                        model_version_id=shifted.id,
                        label=lbl,
                        score=0.8,
                        x1=x1 + dx,
                        y1=y1,
                        x2=x2 + dx,
                        y2=y2,
                    )
                )
            session.add(
                Detection(
                    photo_id=ids[n],
                    model_version_id=shifted.id,
                    label="Cigarette",
                    score=0.3,
                    x1=400,
                    y1=300,
                    x2=440,
                    y2=340,
                )
            )
        unreviewed = _photo(session, 49, exact, [("Cigarette", 1.0, 1, 1, 9, 9)])
        exact_ref, shifted_ref = exact.label, str(shifted.id)
    for n, boxes in truth.items():
        body = (
            {"annotations": [{"label": lbl, "bbox": box} for lbl, *box in boxes]}
            if boxes
            else {"annotations": [], "no_litter": True}
        )
        assert (
            client.put(
                f"/api/v1/photos/{ids[n]}/annotations", json=body, headers=_auth(review_token)
            ).status_code
            == 200
        )
    assert unreviewed not in ids.values()

    stats_token = make_token(pg_sessions, "read:stats", name="analyst")
    url = f"/api/v1/models/compare?a={exact_ref}&b={shifted_ref}"
    assert client.get(url, headers=_auth(review_token)).status_code == 403
    response = client.get(url, headers=_auth(stats_token))
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["photos"] == 3 and result["boxes"] == 3 and result["no_litter_photos"] == 1
    a, b = result["versions"]
    assert (
        a["name"] == "exact" and a["map"] == pytest.approx(1.0) and a["map50"] == pytest.approx(1.0)
    )
    assert a["per_class_ap"] == {"Cigarette": pytest.approx(1.0), "Drink can": pytest.approx(1.0)}
    assert a["detections"] == 3  # the unreviewed photo's detection is not scored
    assert b["detections"] == 6 and b["detections_by_label"] == {"Cigarette": 4, "Drink can": 2}
    assert b["per_class_ap"]["Drink can"] == pytest.approx(1.0)
    assert b["per_class_ap"]["Cigarette"] == pytest.approx(0.0)
    assert b["map"] < a["map"]
    assert (
        client.get(
            "/api/v1/models/compare?a=exact:1&b=nope:9", headers=_auth(stats_token)
        ).status_code
        == 404
    )
    assert (
        client.get("/api/v1/models/compare?a=exact:1", headers=_auth(stats_token)).status_code
        == 400
    )
    nul = client.get("/api/v1/models/compare?a=exact:1&b=%00", headers=_auth(stats_token))
    assert nul.status_code == 400 and nul.json["error"]["code"] == "invalid_b"
    # '6\u00b9' passes str.isdigit() but is no number: a 404 like any unknown version.
    superscript = client.get(
        "/api/v1/models/compare?a=exact:1&b=6%C2%B9", headers=_auth(stats_token)
    )
    assert superscript.status_code == 404, superscript.json

    png = tmp_path / "pr.png"
    run = CliRunner().invoke(
        cli,
        ["models", "compare", exact_ref, shifted_ref, "--json", "--plot", str(png)],
        env=settings_env(pg_settings),
    )
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["versions"][0]["map"] == pytest.approx(1.0)
    with Image.open(png) as image:
        assert image.format == "PNG"
    table = CliRunner().invoke(
        cli, ["models", "compare", exact_ref, shifted_ref], env=settings_env(pg_settings)
    )
    assert table.exit_code == 0 and "mAP50" in table.output and "1.0000" in table.output


@pytest.mark.slow
def test_the_review_page_draws_relabels_and_saves(
    live_server, client, pg_sessions, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from tests.web.test_pages import CHROMIUM, CHROMIUM_ARGS

    if shutil.which(CHROMIUM) is None:
        pytest.skip(reason=f"{CHROMIUM} is missing: `apt-get install chromium` (scripts/test does)")
    from playwright.sync_api import sync_playwright

    photo = post_photo(client, PLAIN).get_json()  # 640 x 480
    with session_scope(pg_sessions) as session:
        version = _version(session, "page-model", ["class_1", "class_2"])
        for label, score, box in (
            ("class_1", 0.9, (40, 50, 200, 220)),
            ("class_2", 0.6, (300, 100, 420, 260)),
        ):
            session.add(
                Detection(
                    photo_id=photo["id"],
                    model_version_id=version.id,
                    label=label,
                    score=score,
                    x1=box[0],
                    y1=box[1],
                    x2=box[2],
                    y2=box[3],
                )
            )
        row = session.get(Photo, photo["id"])
        assert row is not None
        row.status, row.model_version_id = "done", version.id
    token = make_token(pg_sessions, "review", name="page-reviewer")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{live_server.url}/review")
            page.fill("#api-key", token)
            page.click("#signin-button")
            page.wait_for_selector(
                f'body[data-photo="{photo["id"]}"]', state="attached", timeout=20_000
            )
            assert token not in page.url
            assert page.evaluate("localStorage.getItem('trashmap.review.key')") == token
            boxes = page.locator("#boxes li")
            assert boxes.count() == 2
            # Relabel the second suggestion.
            boxes.nth(1).locator("select.box-label").select_option("Cigarette")
            # Draw a new box by dragging over an empty part of the photo.
            page.select_option("#new-label", "Drink can")
            image = page.locator("#photo").bounding_box()
            assert image is not None
            sx = image["width"] / photo["width"]
            sy = image["height"] / photo["height"]
            start = (image["x"] + 480 * sx, image["y"] + 300 * sy)
            end = (image["x"] + 600 * sx, image["y"] + 440 * sy)
            page.mouse.move(*start)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(
                    start[0] + (end[0] - start[0]) * step / 10,
                    start[1] + (end[1] - start[1]) * step / 10,
                )
            page.mouse.up()
            expect_count = 3
            for _ in range(50):
                if boxes.count() == expect_count:
                    break
                page.wait_for_timeout(100)
            assert boxes.count() == expect_count
            page.screenshot(path=str(tmp_path / "review.png"))
            page.click("#save")
            page.wait_for_selector(
                f'body[data-saved="{photo["id"]}"]', state="attached", timeout=10_000
            )
        finally:
            browser.close()
    stored = client.get(
        f"/api/v1/photos/{photo['id']}/annotations", headers=_auth(token)
    ).get_json()["current"]
    got = sorted(stored["annotations"], key=lambda a: a["bbox"][0])
    assert [a["label"] for a in got] == ["class_1", "Cigarette", "Drink can"]
    assert got[0]["bbox"] == pytest.approx([40, 50, 200, 220], abs=0.5)
    assert got[1]["bbox"] == pytest.approx([300, 100, 420, 260], abs=0.5)
    assert got[2]["bbox"] == pytest.approx([480, 300, 600, 440], abs=6)
    assert stored["by"] == "page-reviewer" and stored["no_litter"] is False
