"""The README's run command: `trashmap up --demo` on SQLite files with the SQLAlchemy broker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import PHOTOS_DIR, ROOT, SMALL_DETECTOR_ENV, manifest

DEMO = [
    "exifr__test_fixtures_issue-exifr-3.jpg",
    "exifsamples__jpg_orientation_landscape_6.jpg",
    "exifr__test_fixtures_broken1.jpg",
    "exifsamples__heic_IMG_5195.HEIC",
    "goexif-rwcarlsen__exif_corrupt_huge_tag_exif.jpg",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_trashmap_up_runs_the_demo_on_the_embedded_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in DEMO:
        shutil.copy(PHOTOS_DIR / name, photos / name)
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env.update(SMALL_DETECTOR_ENV, TRASHMAP_DATA_DIR=str(data_dir))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trashmap",
            "up",
            "--untrained",
            "--port",
            str(_free_port()),
            "--demo",
            str(photos),
            "--exit-after-demo",
            "--demo-timeout",
            "300",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = {r.file: r for r in manifest()}
    below = rows["exifr__test_fixtures_issue-exifr-3.jpg"]
    assert f"{below.lat:.6f},{below.lon:.6f} (exif), done" in out, out
    assert "exifr__test_fixtures_broken1.jpg" in out and "no location, done" in out
    assert "HTTP 422 undecodable_image" in out
    # Every result line of the random detector says so.
    done_lines = [line for line in out.splitlines() if ", done" in line]
    assert len(done_lines) == 4
    assert all("from an UNTRAINED model" in line for line in done_lines if "detections" in line)

    # Nothing but files: the database and the queue are SQLite under TRASHMAP_DATA_DIR.
    assert (data_dir / "trashmap.db").is_file() and (data_dir / "broker.db").is_file()
    engine = sa.create_engine(f"sqlite:///{data_dir / 'trashmap.db'}")
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT original_filename, status FROM photos")).all())
        mismatched = conn.execute(
            sa.text(
                "SELECT count(*) FROM detections d JOIN photos p ON p.id = d.photo_id "
                "WHERE d.lat IS NOT p.lat OR d.lon IS NOT p.lon"
            )
        ).scalar()
        detections = conn.execute(sa.text("SELECT count(*) FROM detections")).scalar()
    engine.dispose()
    assert set(statuses.values()) == {"done"} and len(statuses) == 4
    assert detections > 0 and mismatched == 0


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc (children, their children, ...)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # exited while we looked
                continue
            # The second field (the command) may hold spaces: fields follow its ")".
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_sigterm_stops_trashmap_up_and_all_its_children(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env.update(SMALL_DETECTOR_ENV, TRASHMAP_DATA_DIR=str(tmp_path / "var"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    up = subprocess.Popen(
        [sys.executable, "-m", "trashmap", "up", "--untrained", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        photo: dict = {}
        while time.monotonic() < deadline and photo.get("status") not in ("done", "failed"):
            time.sleep(0.5)
            assert up.poll() is None, "trashmap up exited on its own"
            try:
                if not photo:
                    with open(PHOTOS_DIR / DEMO[0], "rb") as fh:
                        photo = requests.post(
                            f"{base}/api/v1/photos", files={"file": fh}, timeout=30
                        ).json()
                photo = requests.get(f"{base}/api/v1/photos/{photo['id']}", timeout=30).json()
            except requests.ConnectionError:
                continue
        # The worker processed a photo, so every child is serving.
        assert photo["status"] == "done", photo
        assert photo["model"]["untrained"] is True
        page = requests.get(f"{base}/map", timeout=30).text
        assert "data-models='[\"untrained:" in page  # the map page's banner knows the model
        children |= _descendants(up.pid)
        assert len(children) >= 3, children  # a worker, gunicorn's master and its worker

        up.send_signal(signal.SIGTERM)
        stop_by = time.monotonic() + 10
        while time.monotonic() < stop_by and (
            up.poll() is None or any(_alive(pid) for pid in children) or not _port_free(port)
        ):
            time.sleep(0.2)
        assert up.poll() == 0
        assert [pid for pid in children if _alive(pid)] == []
        assert _port_free(port)
    finally:
        if up.poll() is None:
            up.kill()
        for pid in children | _descendants(up.pid):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
