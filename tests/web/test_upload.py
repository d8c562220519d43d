"""POST /api/v1/photos on PostgreSQL: every real photo, duplicates, client positions, errors."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa
from PIL import Image

from tests.conftest import PHOTOS_DIR, manifest, post_photo
from trashmap.models import Photo
from trashmap.storage import open_storage, photo_key
from web import create_app

ROWS = manifest()


def test_every_real_photo_is_stored_with_its_manifest_location(  # type: ignore[no-untyped-def]
    client, pg_sessions, pg_settings
) -> None:
    for row in ROWS:
        response = post_photo(client, row.path)
        body = response.get_json()
        if not row.accepted:
            assert response.status_code == 422, (row.file, body)
            code = "undecodable_image" if not row.decodable else "image_too_small"
            assert body["error"]["code"] == code
            continue
        assert response.status_code == 201, (row.file, body)
        assert body["status"] == "queued"
        if row.lat is None:
            assert body["location"] is None, row.file
            assert any("no location" in w for w in body["warnings"])
        else:
            loc = body["location"]
            assert loc["source"] == "exif"
            assert loc["lat"] == pytest.approx(row.lat, abs=1e-6), row.file
            assert loc["lon"] == pytest.approx(row.lon, abs=1e-6), row.file
            if row.alt is not None:
                assert loc["alt"] == pytest.approx(row.alt, abs=0.01)
                assert (loc["alt"] < 0) == (row.alt < 0)
        again = post_photo(client, row.path)
        assert again.status_code == 200
        assert again.get_json()["id"] == body["id"]
    accepted = sum(r.accepted for r in ROWS)
    with pg_sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Photo)) == accepted
        sha256 = session.scalar(
            sa.select(Photo.sha256).where(Photo.original_filename == ROWS[0].file)
        )
    stored = open_storage(pg_settings).get(photo_key(sha256))
    assert stored == ROWS[0].path.read_bytes()  # the original bytes, untouched


@pytest.mark.parametrize(
    ("name", "stored_size", "oriented_size"),
    [
        ("exifsamples__jpg_orientation_landscape_6.jpg", (450, 600), (600, 450)),
        ("exifsamples__jpg_orientation_portrait_8.jpg", (600, 450), (450, 600)),
    ],
)
def test_rotated_photos_report_the_oriented_size(client, name, stored_size, oriented_size) -> None:  # type: ignore[no-untyped-def]
    path = PHOTOS_DIR / name
    assert Image.open(path).size == stored_size
    body = post_photo(client, path).get_json()
    assert (body["width"], body["height"]) == oriented_size


def test_client_position_is_used_when_exif_has_none(client) -> None:  # type: ignore[no-untyped-def]
    body = post_photo(
        client,
        PHOTOS_DIR / "exifsamples__jpg_orientation_landscape_3.jpg",
        lat="-33.8568",
        lon="151.2153",
        taken_at="2024-05-01T14:30:00+10:00",
    ).get_json()
    assert body["location"] == {"lat": -33.8568, "lon": 151.2153, "alt": None, "source": "client"}
    assert body["taken_at"] == "2024-05-01T14:30:00+10:00"


def test_exif_wins_over_a_distant_client_position_with_a_warning(client) -> None:  # type: ignore[no-untyped-def]
    body = post_photo(
        client, PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg", lat="48.8566", lon="2.3522"
    ).get_json()
    assert body["location"]["source"] == "exif"
    assert body["location"]["lat"] == pytest.approx(43.4674483, abs=1e-6)
    assert any("differs from the photo's EXIF GPS" in w for w in body["warnings"])


def test_a_nearby_client_position_adds_no_warning(client) -> None:  # type: ignore[no-untyped-def]
    body = post_photo(
        client, PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0012.jpg", lat="43.4672", lon="11.8854"
    ).get_json()
    assert body["warnings"] == []


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"lat": "abc", "lon": "1"}, "invalid_location"),
        ({"lat": "10"}, "invalid_location"),
        ({"lat": "91", "lon": "0"}, "invalid_location"),
        ({"lat": "0", "lon": "0"}, "invalid_location"),
        ({"lat": "nan", "lon": "1"}, "invalid_location"),
        ({"taken_at": "yesterday"}, "invalid_taken_at"),
        ({"latitude": "10"}, "unknown_field"),
    ],
)
def test_bad_form_fields_are_400(client, fields, code) -> None:  # type: ignore[no-untyped-def]
    response = post_photo(client, PHOTOS_DIR / "exiftool__t_images_GPS.jpg", **fields)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


def test_missing_file_and_non_multipart_are_400(client) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/v1/photos", data={"lat": "1"}).status_code == 400
    response = client.post("/api/v1/photos", data=b"\xff\xd8", content_type="image/jpeg")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "expected_multipart"


@pytest.mark.parametrize(
    ("payload", "status"),
    [(b"", 415), (b"%PDF-1.4 not a photo", 415), (b"PK\x03\x04zipzip", 415)],
)
def test_files_that_are_not_images_are_415(client, payload, status) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(payload), "x.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == status
    assert "error" in response.get_json()


def test_gif_is_refused_as_unsupported(client) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "GIF")
    response = client.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(buf.getvalue()), "a.gif")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_format"


def test_a_truncated_jpeg_is_422(client) -> None:  # type: ignore[no-untyped-def]
    data = (PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg").read_bytes()
    response = client.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(data[: len(data) // 2]), "half.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422


def test_oversized_upload_is_413_and_stores_nothing(pg_settings, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    app = create_app(replace(pg_settings, max_upload_mb=0.5))
    response = post_photo(app.test_client(), PHOTOS_DIR / "exifsamples__jpg_hdr_iphone_hdr_NO.jpg")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    with pg_sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Photo)) == 0


def test_unknown_photo_is_a_json_404(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/photos/999999")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def _multipart(*parts: tuple[str, bytes]) -> bytes:
    """A multipart/form-data body (boundary `b`) from (Content-Disposition, payload) pairs."""
    body = b"".join(
        b"--b\r\nContent-Disposition: " + d.encode() + b"\r\n\r\n" + payload + b"\r\n"
        for d, payload in parts
    )
    return body + b"--b--\r\n"


@pytest.mark.parametrize(
    "parts",
    [
        [("form-data", b"x"), ('form-data; name="f2"', b"y")],
        [('form-data; filename="a.jpg"', b"\xff\xd8"), ('form-data; name="f2"', b"y")],
        [('form-data; name="file"; filename="a.jpg"', b"\xff\xd8"), ("form-data", b"x")],
    ],
    ids=["unnamed field", "unnamed file", "file and unnamed field"],
)
def test_a_part_without_a_name_is_400(client, parts) -> None:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/v1/photos", data=_multipart(*parts), content_type="multipart/form-data; boundary=b"
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "unknown_field"


@pytest.mark.parametrize("fields", [{"lat": ""}, {"lat": "", "lon": ""}, {"lat": "10", "lon": ""}])
def test_empty_coordinates_are_400(client, fields) -> None:  # type: ignore[no-untyped-def]
    response = post_photo(client, PHOTOS_DIR / "exiftool__t_images_GPS.jpg", **fields)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_location"
