"""The public image: upright, a few fixed sizes computed once, and no metadata of the original."""

from __future__ import annotations

import io

from PIL import Image, ImageCms

from tests.conftest import PHOTOS_DIR, post_photo
from trashmap.models import Photo
from trashmap.storage import default_storage, derivative_key, photo_key

GPS_PHOTO = PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg"


def _markers(jpeg: bytes) -> list[int]:
    """The marker codes of a JPEG's header segments, up to its first scan."""
    assert jpeg[:2] == b"\xff\xd8"
    markers, pos = [], 2
    while True:
        marker = jpeg[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            return markers
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")


def _upload_bytes(client, data: bytes, name: str = "p.jpg") -> int:  # type: ignore[no-untyped-def]
    response = client.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def test_image_has_no_exif_and_no_gps(client) -> None:  # type: ignore[no-untyped-def]
    original = GPS_PHOTO.read_bytes()
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # it has GPS
    photo_id = post_photo(client, GPS_PHOTO).get_json()["id"]
    response = client.get(f"/api/v1/photos/{photo_id}/image")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(response.data))
    assert image.size == Image.open(GPS_PHOTO).size
    assert not image.getexif() and "exif" not in image.info
    assert b"Exif" not in response.data and b"GPS" not in response.data
    assert b"NIKON" not in response.data.upper()


def test_no_metadata_segment_of_the_original_is_passed_on(client) -> None:  # type: ignore[no-untyped-def]
    """COM, XMP (APP1) and ICC (APP2) of the upload are all absent from the public copy."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 40, 40)).save(
        buffer,
        "JPEG",
        comment=b"shot by Jane Doe, +1 555 0100",
        icc_profile=profile,
        xmp=b"<x:xmpmeta><dc:creator>Jane Doe</dc:creator></x:xmpmeta>",
    )
    original = buffer.getvalue()
    assert {0xFE, 0xE1, 0xE2} <= set(_markers(original))
    photo_id = _upload_bytes(client, original)
    for query in ({}, {"max_size": "256"}):
        public = client.get(f"/api/v1/photos/{photo_id}/image", query_string=query).data
        assert not {0xFE, 0xE1, 0xE2} & set(_markers(public)), _markers(public)
        assert b"Jane" not in public and b"sRGB" not in public
        assert Image.open(io.BytesIO(public)).getpixel((10, 10))[0] > 150  # still red


def test_thumbnail_is_upright_and_bounded(client) -> None:  # type: ignore[no-untyped-def]
    path = PHOTOS_DIR / "exifsamples__jpg_orientation_landscape_6.jpg"  # stored 450x600
    photo_id = post_photo(client, path).get_json()["id"]
    full = Image.open(io.BytesIO(client.get(f"/api/v1/photos/{photo_id}/image").data))
    assert full.size == (600, 450)
    thumb = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": 256})
    assert Image.open(io.BytesIO(thumb.data)).size == (256, 192)
    assert thumb.headers["Cache-Control"].startswith("public")
    again = client.get(
        f"/api/v1/photos/{photo_id}/image",
        query_string={"max_size": 256},
        headers={"If-None-Match": thumb.headers["ETag"]},
    )
    assert again.status_code == 304
    assert client.get("/api/v1/photos/999999/image").status_code == 404


def test_only_the_listed_sizes_exist(client) -> None:  # type: ignore[no-untyped-def]
    photo_id = post_photo(client, GPS_PHOTO).get_json()["id"]
    for value in ("2", "120", "300", "8192", "", "full"):
        response = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": value})
        assert response.status_code == 400, value
        error = response.get_json()["error"]
        assert error["code"] == "invalid_max_size" and "256, 512, 1024, 2048" in error["message"]


def test_a_large_photo_is_served_at_2048_at_most(client) -> None:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 1200), (30, 90, 30)).save(buffer, "JPEG")
    photo_id = _upload_bytes(client, buffer.getvalue())
    full = client.get(f"/api/v1/photos/{photo_id}/image")
    assert Image.open(io.BytesIO(full.data)).size == (2048, 819)


def test_each_rendition_is_computed_once_and_goes_with_its_photo(  # type: ignore[no-untyped-def]
    client, pg_sessions, staff_token
) -> None:
    photo_id = post_photo(client, GPS_PHOTO).get_json()["id"]
    first = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": 512})
    with pg_sessions() as session:
        sha256 = session.get(Photo, photo_id).sha256
    storage = default_storage()
    kept = [obj.key for obj in storage.list(f"derivatives/{sha256}/")]
    assert kept == [derivative_key(sha256, 512)]
    assert storage.get(derivative_key(sha256, 512)) == first.data
    # Without the original, only what was kept can still be served.
    storage.delete(photo_key(sha256))
    second = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": 512})
    assert second.status_code == 200 and second.data == first.data
    other = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": 256})
    assert other.status_code == 404
    headers = {"Authorization": f"Bearer {staff_token}"}
    assert client.delete(f"/api/v1/photos/{photo_id}", headers=headers).status_code == 204
    assert list(storage.list(f"derivatives/{sha256}/")) == []
