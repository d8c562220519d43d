"""QGIS's own OAPIF provider (not GDAL's driver) adds the OGC collection as a layer from a
running `trashmap web`, and reads every feature across pages with typed fields.

QGIS runs in Debian's python3 (python3-qgis); the test skips where it is not installed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import settings_env
from tests.web.test_ogc import PAGE, SEEDED, seed_many

SCRIPT = Path(__file__).with_name("qgis") / "read_oapif.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def _has_qgis() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    found = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return found.returncode == 0


@pytest.mark.slow
def test_qgis_adds_the_layer_and_reads_every_page(pg_settings, pg_sessions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not _has_qgis():
        pytest.skip(reason="QGIS's Python bindings missing: apt-get install python3-qgis")
    from tests.reliability.servers import WebServer

    seeded = seed_many(pg_sessions, SEEDED)
    env = settings_env(pg_settings)
    env["TRASHMAP_RATE_LIMIT_ENABLED"] = "false"
    server = WebServer(env, tmp_path / "web.log", workers=2)
    try:
        server.wait_listening()
        done = subprocess.run(
            [SYSTEM_PYTHON, str(SCRIPT), f"{server.url}/ogc", "detections", str(PAGE)],
            capture_output=True,
            text=True,
            timeout=300,
            env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["valid"], (tmp_path / "web.log").read_text()[-2000:]
    assert seen["crs"] in ("EPSG:4326", "OGC:CRS84")
    assert seen["types"]["score"].lower() in ("double", "real")
    assert seen["types"]["label"].lower() == "string"
    assert seen["types"]["photo_id"].lower() in ("integer", "integer64", "int")
    values = sorted((f["label"], f["score"], f["photo_id"]) for f in seen["features"])
    assert len(values) == SEEDED  # every page, each feature once
    assert values == sorted(seeded.values())
    # Longitude first, as seeded (48.8..48.9 N, 2.3..2.4 E): QGIS kept the axis order.
    assert all(
        2.3 <= x <= 2.4 and 48.8 <= y <= 48.9 for x, y in (f["point"] for f in seen["features"])
    )
