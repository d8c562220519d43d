"""Upload -> PostgreSQL -> Redis -> a real Celery worker process -> detections with GPS."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from celery import Celery

from tests.conftest import PHOTOS_DIR, manifest, post_photo, wait_for_status
from trashmap.models import Detection, Photo
from trashmap.queue import DETECT_TASK, celery_config

# Real worker processes (and servers): the slow tier.
pytestmark = pytest.mark.slow

ROWS = manifest()


def _upload_all(client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    ids = {}
    for row in ROWS:
        response = post_photo(client, row.path)
        if response.status_code == 201:
            ids[row.file] = response.get_json()["id"]
    return ids


def test_every_decodable_photo_ends_done_with_geotagged_detections(
    client,
    pg_worker,
    pg_sessions,  # type: ignore[no-untyped-def]
) -> None:
    ids = _upload_all(client)
    assert len(ids) == sum(r.accepted for r in ROWS)
    statuses = wait_for_status(pg_sessions, list(ids.values()))
    assert set(statuses.values()) == {"done"}, (statuses, pg_worker.log()[-3000:])

    with pg_sessions() as session:
        rows = session.execute(
            sa.select(Detection, Photo.lat, Photo.lon, Photo.width, Photo.height).join(
                Photo, Photo.id == Detection.photo_id
            )
        ).all()
    assert rows, "the detector produced no detections at all: the run proves nothing"
    assert {r.Detection.photo_id for r in rows} == set(ids.values())
    for det, lat, lon, width, height in rows:
        assert (det.lat, det.lon) == (lat, lon)
        assert 0 <= det.x1 <= det.x2 <= width and 0 <= det.y1 <= det.y2 <= height

    # The API reports the same, with the model that made them.
    body = client.get(f"/api/v1/photos/{ids['exifsamples__jpg_gps_DSCN0010.jpg']}").get_json()
    assert body["status"] == "done" and body["model"]["name"] == "untrained"
    assert body["detections"] and all(len(d["bbox"]) == 4 for d in body["detections"])
    features = client.get("/api/v1/detections?bbox=11.8,43.4,11.9,43.5").get_json()["features"]
    assert features and {f["properties"]["photo_id"] for f in features} <= set(ids.values())
    for feature in features:
        lon, lat = feature["geometry"]["coordinates"]
        assert 11.8 <= lon <= 11.9 and 43.4 <= lat <= 43.5


def test_rotated_photo_boxes_lie_inside_the_oriented_frame(client, pg_worker, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    ids = {}
    for name in (
        "exifsamples__jpg_orientation_landscape_6.jpg",
        "exifsamples__jpg_orientation_portrait_8.jpg",
    ):
        ids[name] = post_photo(client, PHOTOS_DIR / name).get_json()["id"]
    assert set(wait_for_status(pg_sessions, list(ids.values())).values()) == {"done"}
    for photo_id in ids.values():
        body = client.get(f"/api/v1/photos/{photo_id}").get_json()
        assert body["detections"]
        xs = [v for d in body["detections"] for v in d["bbox"][0::2]]
        ys = [v for d in body["detections"] for v in d["bbox"][1::2]]
        assert min(xs) >= 0 and max(xs) <= body["width"]
        assert min(ys) >= 0 and max(ys) <= body["height"]


def test_running_a_photo_twice_changes_nothing(client, pg_settings, pg_worker, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    photo_id = post_photo(client, PHOTOS_DIR / "exiftool__t_images_GPS.jpg").get_json()["id"]
    wait_for_status(pg_sessions, [photo_id])

    def snapshot() -> list[tuple]:
        with pg_sessions() as session:
            return [
                tuple(r)
                for r in session.execute(
                    sa.select(
                        Detection.label,
                        Detection.score,
                        Detection.x1,
                        Detection.y1,
                        Detection.x2,
                        Detection.y2,
                        Detection.model_version_id,
                    )
                    .where(Detection.photo_id == photo_id)
                    .order_by(Detection.score, Detection.x1)
                )
            ]

    first = snapshot()
    assert first
    producer = Celery(set_as_current=False)
    producer.conf.update(celery_config(pg_settings))
    for runs in (2, 3):  # the upload's run, then two more, one after the other
        with pg_sessions.begin() as session:
            session.get(Photo, photo_id).status = "queued"
        producer.send_task(DETECT_TASK, args=[photo_id])
        _wait_for_runs(pg_worker, photo_id, runs)
    assert wait_for_status(pg_sessions, [photo_id]) == {photo_id: "done"}
    assert snapshot() == first


def _wait_for_runs(worker, photo_id: int, count: int, timeout_s: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    marker = f"photo {photo_id}: "
    while time.monotonic() < deadline:
        runs = [
            line for line in worker.log().splitlines() if marker in line and "detections (" in line
        ]
        if len(runs) >= count:
            return
        time.sleep(0.3)
    raise AssertionError(f"photo {photo_id} ran fewer than {count} times:\n{worker.log()[-2000:]}")


def test_a_photo_whose_bytes_cannot_be_decoded_is_failed_with_a_reason(
    client,
    pg_settings,
    pg_worker,
    pg_sessions,  # type: ignore[no-untyped-def]
) -> None:
    photo_id = post_photo(client, PHOTOS_DIR / "exiftool__t_images_GPS.jpg").get_json()["id"]
    wait_for_status(pg_sessions, [photo_id])
    from trashmap.storage import default_storage, put_photo_bytes

    # Bytes that match their checksum but are no image (a damaged object is PhotoCorrupted).
    sha256 = put_photo_bytes(default_storage(), b"\xff\xd8\xff\xe0garbage")
    with pg_sessions.begin() as session:
        photo = session.get(Photo, photo_id)
        photo.sha256, photo.status = sha256, "queued"
    producer = Celery(set_as_current=False)
    producer.conf.update(celery_config(pg_settings))
    producer.send_task(DETECT_TASK, args=[photo_id])
    assert wait_for_status(pg_sessions, [photo_id]) == {photo_id: "failed"}
    body = client.get(f"/api/v1/photos/{photo_id}").get_json()
    assert body["status"] == "failed"
    assert "UndecodableImage" in body["error"]
