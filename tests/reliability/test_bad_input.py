"""Every bad input gets a clear 4xx JSON error, and odd-but-valid photos are accepted."""

from __future__ import annotations

import io
import re
import socket
import struct
import zlib

import pytest
import sqlalchemy as sa
from PIL import Image

from tests.conftest import PHOTOS_DIR, manifest, settings_env
from tests.reliability.servers import WebServer
from trashmap.models import Photo


def _upload(client, data: bytes, name: str = "photo.jpg", **fields: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/photos",
        data={"file": (io.BytesIO(data), name), **fields},
        content_type="multipart/form-data",
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but carries almost no data (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (32, 32), (i * 60, 10, 10)) for i in range(3)]


def _scan_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan (SOS header + entropy-coded data) of a JPEG."""
    spans, pos = [], 2
    while data[pos + 1] != 0xD9:  # EOI
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        if marker == 0xDA:  # skip the entropy-coded data: up to the next real marker
            end = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end).start()  # type: ignore[union-attr]
            spans.append((pos, end))
        pos = end
    return spans


def progressive_jpeg(width: int, height: int, scans: int) -> bytes:
    """A real progressive JPEG with `scans` scans: libjpeg's ~10, then its last (a tiny AC
    refinement of a flat image) repeated. Every scan still walks every block when decoding,
    which is what makes such a file slow: 2000 scans of 4000x3000 take ~20 CPU s."""
    data = _encoded(Image.new("RGB", (width, height), (120, 130, 140)), "JPEG", progressive=True)
    spans = _scan_spans(data)
    start, end = spans[-1]
    extra = scans - len(spans)
    assert extra >= 0
    return data[:end] + data[start:end] * extra + data[end:]


REJECTED = [
    ("zero bytes", b"", 415, "not_an_image"),
    ("text named .jpg", b"just some text\n" * 10, 415, "not_an_image"),
    ("pdf named .jpg", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", 415, "not_an_image"),
    ("zip named .jpg", b"PK\x03\x04" + b"\0" * 40, 415, "not_an_image"),
    ("png bomb 50000x50000", _png_header_only(50_000, 50_000), 422, "image_too_large"),
    ("png bomb 12000x12000", _png_header_only(12_000, 12_000), 422, "image_too_large"),
    (
        "animated gif",
        _encoded(_frames()[0], "GIF", save_all=True, append_images=_frames()[1:]),
        415,
        "unsupported_format",
    ),
    ("bmp", _encoded(Image.new("RGB", (8, 8)), "BMP"), 415, "unsupported_format"),
    ("jpeg header only", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", 422, "undecodable_image"),
    ("15 px tall", _encoded(Image.new("RGB", (64, 15)), "PNG"), 422, "image_too_small"),
    ("1:51 strip", _encoded(Image.new("RGB", (51 * 16, 16)), "JPEG"), 422, "aspect_ratio"),
    ("2000-scan progressive jpeg", progressive_jpeg(4000, 3000, 2000), 422, "too_many_scans"),
    # 24 MP x 90 scans: under the scan limit, over the pixels x scans decode budget.
    ("24 MP, 90 scans", progressive_jpeg(6000, 4000, 90), 422, "decode_budget"),
]


@pytest.mark.parametrize(("what", "data", "status", "code"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected_files_get_a_json_4xx(client, pg_sessions, what, data, status, code) -> None:  # type: ignore[no-untyped-def]
    response = _upload(client, data)
    assert response.status_code == status, (what, response.get_json())
    assert response.get_json()["error"]["code"] == code
    with pg_sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Photo)) == 0


def test_truncated_copies_of_every_real_jpeg_are_refused(client) -> None:  # type: ignore[no-untyped-def]
    for row in manifest():
        if not row.file.lower().endswith(".jpg") or not row.decodable:
            continue
        data = row.path.read_bytes()
        response = _upload(client, data[: int(len(data) * 0.6)])
        # A cut through the pixel data is 422; through the EXIF header, no image at all (415).
        assert response.status_code in (415, 422), (row.file, response.status_code)
        assert "error" in response.get_json()


ACCEPTED = [
    ("16-bit greyscale png", _encoded(Image.new("I;16", (64, 48), 40_000), "PNG"), "image/png"),
    ("cmyk jpeg", _encoded(Image.new("CMYK", (64, 48), (10, 20, 30, 40)), "JPEG"), "image/jpeg"),
    (
        "animated webp",
        _encoded(_frames()[0], "WEBP", save_all=True, append_images=_frames()[1:]),
        "image/webp",
    ),
    ("palette png", _encoded(Image.new("P", (20, 16)), "PNG"), "image/png"),
    ("1:50 strip", _encoded(Image.new("RGB", (50 * 16, 16)), "PNG"), "image/png"),
    ("progressive jpeg", progressive_jpeg(640, 480, 10), "image/jpeg"),
    ("progressive jpeg, 100 scans", progressive_jpeg(640, 480, 100), "image/jpeg"),
]


@pytest.mark.parametrize(("what", "data", "content_type"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_unusual_but_valid_images_are_accepted(client, what, data, content_type) -> None:  # type: ignore[no-untyped-def]
    response = _upload(client, data, "odd.bin")
    assert response.status_code == 201, (what, response.get_json())
    body = response.get_json()
    assert body["location"] is None and body["status"] == "queued"
    photo = client.get(f"/api/v1/photos/{body['id']}").get_json()
    assert photo["content_type"] == content_type


def test_scans_are_counted_without_decoding() -> None:
    from trashmap.imaging import MAX_JPEG_SCANS, count_jpeg_scans

    assert count_jpeg_scans((PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg").read_bytes()) == 1
    assert count_jpeg_scans(progressive_jpeg(64, 48, 10)) == 10
    assert count_jpeg_scans(progressive_jpeg(64, 48, 57)) == 57
    # The walk stops one past the limit: its own cost is bounded too.
    assert count_jpeg_scans(progressive_jpeg(64, 48, 5000)) == MAX_JPEG_SCANS + 1


def test_workers_refuse_the_same_files_before_decoding() -> None:
    """The worker decodes through trashmap.imaging too: the scan check protects it as well."""
    from trashmap.imaging import TooManyScans, decode_oriented

    with pytest.raises(TooManyScans):
        decode_oriented(progressive_jpeg(4000, 3000, 2000), target=(800, 1333))


def test_a_decode_over_its_cpu_budget_is_refused() -> None:
    from trashmap.imaging import DecodeBudget, inspect_image

    data = (PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg").read_bytes()
    assert inspect_image(data).width == 640
    with pytest.raises(DecodeBudget) as refused:
        inspect_image(data, cpu_budget_s=0.0)
    assert refused.value.code == "decode_budget"


def test_heic_without_gps_is_stored_without_location(client) -> None:  # type: ignore[no-untyped-def]
    response = _upload(
        client,
        (PHOTOS_DIR / "exifsamples__heic_mobile_iphone_13_pro_max.HEIC").read_bytes(),
        "IMG_0001.HEIC",
    )
    assert response.status_code == 201
    assert response.get_json()["location"] is None


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/passwd.jpg",
        "..\\..\\boot.ini.jpg",
        "/absolute/path.jpg",
        "a\x00b.jpg",
        "ü" * 400 + ".jpg",
    ],
)
def test_hostile_file_names_are_neutralised(client, pg_sessions, name) -> None:  # type: ignore[no-untyped-def]
    data = _encoded(Image.new("RGB", (16, 16), (len(name) % 255, 0, 0)), "JPEG")
    response = _upload(client, data, name)
    assert response.status_code == 201
    with pg_sessions() as session:
        stored = session.scalar(sa.select(Photo.original_filename))
    assert stored is None or (
        "/" not in stored
        and "\\" not in stored
        and ".." not in stored
        and "\x00" not in stored
        and len(stored) <= 255
    )


@pytest.mark.parametrize(
    "query",
    [
        "bbox=10,10,0,0",
        "bbox=1,2,3",
        "bbox=a,b,c,d",
        "bbox=-200,0,0,1",
        "bbox=0,-95,1,1",
        "bbox=nan,0,1,1",
        "limit=0",
        "limit=10000000000000",
        "limit=ten",
        "min_score=2",
        "min_score=-0.1",
        "min_score=inf",
    ],
)
def test_bad_query_parameters_are_400(client, query) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api/v1/detections?{query}")
    assert response.status_code == 400, query
    assert response.get_json()["error"]["code"].startswith("invalid_")


def test_sql_metacharacters_are_just_text(client) -> None:  # type: ignore[no-untyped-def]
    for label in ["'; DROP TABLE photos; --", '" OR 1=1 --', "%", "_", "\\"]:
        response = client.get("/api/v1/detections", query_string={"label": label})
        assert response.status_code == 200
        assert response.get_json()["features"] == []
    assert client.get("/api/v1/photos/1;DROP").status_code == 404


def test_an_oversized_body_is_refused_before_it_is_sent(pg_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Headers announce 10 GB; the server answers 413 without waiting for a single body byte."""
    server = WebServer(settings_env(pg_settings), tmp_path / "web.log", workers=1)
    try:
        server.wait_listening()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(
                b"POST /api/v1/photos HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n"
                b"Content-Length: 10737418240\r\nConnection: close\r\n\r\n"
            )
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"application/json" in reply
    finally:
        server.stop()
