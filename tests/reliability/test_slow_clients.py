"""Slow clients cannot stall the service behind the shipped nginx (deploy/nginx.conf).

gunicorn's gthread worker gives a request a thread until its body has arrived; a client
that announces `Content-Length: 100000` and sends 5 bytes holds that thread until it gives
up. `trashmap web --workers 1` has 4 threads, so 20 such clients stall it completely: the
second half of the test shows /healthz sent straight to gunicorn getting no answer. nginx
reads bodies itself (proxy_request_buffering) with a timeout, so through it /healthz
answers at once while the same 20 clients dawdle.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import string
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.conftest import PHOTOS_DIR, ROOT, settings_env, stop_process
from tests.reliability.servers import WebServer, free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SLOW_CLIENTS = 20

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        NGINX is None,
        reason="nginx is not installed: apt-get install nginx-light (scripts/services.sh)",
    ),
]


def _wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


@contextmanager
def nginx_in_front(upstream_port: int, max_upload_mb: float, folder: Path) -> Iterator[int]:
    """nginx with deploy/nginx.conf (filled in as docker-compose.yml does) on a free port."""
    port = free_port()
    site = string.Template((ROOT / "deploy" / "nginx.conf").read_text()).safe_substitute(
        NGINX_UPSTREAM=f"127.0.0.1:{upstream_port}",
        NGINX_PORT=f"127.0.0.1:{port}",
        NGINX_MAX_BODY=f"{math.ceil(max_upload_mb * 1024) + 64}k",
    )
    (folder / "trashmap.conf").write_text(site)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (folder / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # else workers cannot enter tmp_path
        + f"worker_processes 1;\ndaemon off;\npid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log warn;\nevents {{ worker_connections 256; }}\n"
        "http {\n  access_log off;\n"
        + "".join(f"  {name}_temp_path {path};\n" for name, path in temp.items()).replace(
            "body_temp", "client_body_temp"
        )
        + f"  include {folder}/trashmap.conf;\n}}\n"
    )
    proc = subprocess.Popen(
        [str(NGINX), "-p", str(folder), "-e", str(folder / "error.log"), "-c", "nginx.conf"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(port)
        yield port
    finally:
        stop_process(proc)


def _slow_uploads(stack: ExitStack, port: int) -> None:
    """SLOW_CLIENTS connections that announce 100000 body bytes and send 5."""
    for _ in range(SLOW_CLIENTS):
        sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        sock.sendall(
            b"POST /api/v1/photos HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 100000\r\n\r\n--x\r\n"
        )
    time.sleep(0.5)  # let the server take them all in


def _healthz(port: int, timeout_s: float) -> tuple[bytes, float]:
    """The first line of GET /healthz's answer and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = sock.recv(4096)
    return reply.split(b"\r\n", 1)[0], time.monotonic() - started


def _upload(port: int, data: bytes) -> bytes:
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--x--\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/photos HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def _announce_body(port: int, length: int) -> bytes:
    """The answer to upload headers that announce `length` body bytes (none sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/photos HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_healthz_answers_within_a_second_while_20_clients_send_slowly(
    pg_settings,
    pg_clean,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    web = WebServer(settings_env(pg_settings), tmp_path / "web.log", workers=1)
    try:
        web.wait_listening()
        with (
            nginx_in_front(web.port, pg_settings.max_upload_mb, tmp_path) as port,
            ExitStack() as stack,
        ):
            _slow_uploads(stack, port)
            status, took = _healthz(port, timeout_s=5)
            assert status == b"HTTP/1.1 200 OK" and took < 1.0, (status, took)
            # Real uploads pass through too, and an oversized one is refused as JSON.
            photo = (PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg").read_bytes()
            assert _upload(port, photo).startswith(b"HTTP/1.1 201")
            too_big = _announce_body(port, pg_settings.max_upload_bytes + 200_000)
            assert too_big.startswith(b"HTTP/1.1 413") and b"payload_too_large" in too_big

        # The same clients straight at gunicorn hold all of its threads.
        with ExitStack() as stack:
            _slow_uploads(stack, web.port)
            with pytest.raises(TimeoutError):
                _healthz(web.port, timeout_s=1.0)
    finally:
        web.stop()
