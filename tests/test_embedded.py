"""The README's run command: `trashmap up --demo` on SQLite files with the SQLAlchemy broker."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

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
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TRASHMAP_")}
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
