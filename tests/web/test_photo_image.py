"""The public image: upright, shrunk on request, and re-encoded without any EXIF or GPS."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import PHOTOS_DIR, post_photo

GPS_PHOTO = PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg"


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


def test_thumbnail_is_upright_and_bounded(client) -> None:  # type: ignore[no-untyped-def]
    path = PHOTOS_DIR / "exifsamples__jpg_orientation_landscape_6.jpg"  # stored 450x600
    photo_id = post_photo(client, path).get_json()["id"]
    full = Image.open(io.BytesIO(client.get(f"/api/v1/photos/{photo_id}/image").data))
    assert full.size == (600, 450)
    thumb = client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": 120})
    assert Image.open(io.BytesIO(thumb.data)).size == (120, 90)
    again = client.get(
        f"/api/v1/photos/{photo_id}/image",
        query_string={"max_size": 120},
        headers={"If-None-Match": thumb.headers["ETag"]},
    )
    assert again.status_code == 304
    assert client.get("/api/v1/photos/999999/image").status_code == 404
    assert (
        client.get(f"/api/v1/photos/{photo_id}/image", query_string={"max_size": "2"}).status_code
        == 400
    )
