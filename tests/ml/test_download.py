"""`download-taco` against a real HTTP server started by the test: retries, resume, checks."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from ml.download import REPORT, DownloadOptions, main


def _jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.effect_noise((width, height), 60).convert("RGB").save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 30)).save(buffer, "PNG")
    return buffer.getvalue()


FULL = _jpeg(64, 48)
SERVED = {
    "/good.jpg": FULL,
    "/rotated.jpg": _jpeg(48, 64, orientation=6),  # stored portrait, shown landscape
    "/flaky.jpg": _jpeg(64, 48),
    "/cut.jpg": _jpeg(64, 48),
    "/picture.png": _png(64, 48),  # TACO's first image is a PNG behind a .jpg name
    "/truncated.jpg": FULL[: len(FULL) * 2 // 3],
    "/wrong-size.jpg": _jpeg(64, 48),
}


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits[self.path] += 1
        body = SERVED.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if self.path == "/flaky.jpg" and self.hits[self.path] == 1:
            self.send_error(503)
            return
        start = 0
        if range_header := self.headers.get("Range"):
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path == "/cut.jpg" and start == 0:
            # The connection drops half way: the client must resume with a Range request.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _annotations(tmp_path: Path, base: str) -> Path:
    names = ["good", "rotated", "flaky", "cut", "picture", "truncated", "wrong-size", "missing"]
    images = []
    for i, name in enumerate(names):
        suffix = ".png" if name == "picture" else ".jpg"
        size = (100, 100) if name == "wrong-size" else (64, 48)
        images.append(
            {
                "id": i,
                "file_name": f"batch_1/{name}.jpg",
                "width": size[0],
                "height": size[1],
                "flickr_url": f"{base}/{name}{suffix}",
            }
        )
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    return path


def test_download_retries_resumes_verifies_and_reports(server: str, tmp_path: Path) -> None:
    annotations = _annotations(tmp_path, server)
    out = tmp_path / "images"
    options = DownloadOptions(
        annotations, out, workers=4, retries=2, backoff=0.01, timeout=5, progress=False
    )
    report = main(options)
    assert report["images"] == 8 and report["downloaded"] == 5 and report["present"] == 0
    failures = {f["file_name"]: f["reason"] for f in report["failed"]}
    assert set(failures) == {
        "batch_1/truncated.jpg",
        "batch_1/wrong-size.jpg",
        "batch_1/missing.jpg",
    }
    assert "HTTP 404" in failures["batch_1/missing.jpg"]
    assert "does not decode" in failures["batch_1/truncated.jpg"]
    assert "annotation says 100x100" in failures["batch_1/wrong-size.jpg"]
    assert json.loads((out / REPORT).read_text()) == report
    for name in ("good", "rotated", "flaky", "cut", "picture"):
        suffix = ".png" if name == "picture" else ".jpg"
        saved = (out / "batch_1" / f"{name}.jpg").read_bytes()
        served = SERVED[f"/{name}{suffix}"]
        assert hashlib.sha256(saved).digest() == hashlib.sha256(served).digest(), name
    assert Image.open(out / "batch_1" / "rotated.jpg").getexif()[0x0112] == 6  # EXIF kept
    assert _Handler.hits["/flaky.jpg"] == 2  # one 503, one retry
    assert _Handler.hits["/cut.jpg"] == 2  # one dropped connection, one Range request
    assert _Handler.hits["/missing.jpg"] == 1  # a 404 is not retried
    for name in ("truncated", "wrong-size", "missing"):
        assert not (out / "batch_1" / f"{name}.jpg").exists()
    assert not list(out.rglob("*.part"))

    again = main(options)  # resumable: what is there and valid is not fetched again
    assert again["present"] == 5 and again["downloaded"] == 0 and len(again["failed"]) == 3
    assert _Handler.hits["/good.jpg"] == 1


def test_a_corrupted_local_file_is_fetched_again(server: str, tmp_path: Path) -> None:
    annotations = _annotations(tmp_path, server)
    out = tmp_path / "images"
    (out / "batch_1").mkdir(parents=True)
    (out / "batch_1" / "good.jpg").write_bytes(FULL[:100])
    report = main(DownloadOptions(annotations, out, retries=1, backoff=0.01, progress=False))
    assert (out / "batch_1" / "good.jpg").read_bytes() == FULL
    assert report["downloaded"] == 5
