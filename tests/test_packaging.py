"""The wheel: every package, the migrations and the page assets, and it runs from anywhere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PHOTOS_DIR, ROOT, SMALL_DETECTOR_ENV

PACKAGES = ("trashmap", "web", "worker", "ml")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this checkout, built without network (the venv's setuptools)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("trashmap-*.whl")
    return found


def _installed_name(path: Path) -> str:
    """Where a checkout file lands in the wheel (migrations/ becomes trashmap/migrations/)."""
    relative = path.relative_to(ROOT).as_posix()
    return "trashmap/" + relative if relative.startswith("migrations/") else relative


def test_wheel_holds_every_module_migration_and_asset(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [
        path
        for top in (*PACKAGES, "migrations")
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and "docs" not in path.parts  # figures for the READMEs, not package data
        and (
            path.suffix in (".py", ".json", ".html", ".css", ".js", ".png", ".ini", ".mako")
            or "static" in path.parts
        )
    ]
    missing = sorted(_installed_name(p) for p in expected if _installed_name(p) not in names)
    assert expected and missing == []
    assert "trashmap/migrations/alembic.ini" in names
    assert any(n.startswith("trashmap/migrations/versions/0001_") for n in names)


def test_extras_keep_torch_and_flask_out_of_the_core() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert "torch" not in core and "flask" not in core and "gunicorn" not in core
    extras = project["optional-dependencies"]
    assert {"web", "worker", "ml", "all", "test"} <= set(extras)
    assert not any("torch" in req for req in extras["web"])
    assert any(req.startswith("flask>=") for req in extras["web"])
    for extra in ("worker", "ml"):
        # The pins scripts/bootstrap.sh installs must satisfy every range.
        assert "torch>=2.4,<2.15" in extras[extra] and "torchvision>=0.19,<0.30" in extras[extra]
    assert extras["all"] == ["trashmap[web,worker,ml]"]
    assert "trashmap[all]" in extras["test"]


@pytest.mark.slow
def test_installed_copy_migrates_and_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python, trashmap = venv / "bin" / "python", venv / "bin" / "trashmap"
    # The dependencies come from this test's environment, listed after the new venv's own
    # site-packages (a .pth line), so the installed trashmap is the one imported.
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env.pop("PYTHONPATH", None)
    env.update(SMALL_DETECTOR_ENV)

    def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout
        )

    where = run(
        str(python),
        "-c",
        "import trashmap, web, worker, ml, trashmap.migrate as m; "
        "print(trashmap.__file__, web.__file__, worker.__file__, ml.__file__, m.migrations_dir())",
    )
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout

    result = run(str(trashmap), "db", "upgrade")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (elsewhere / "var" / "trashmap.db").is_file()
    result = run(str(trashmap), "keys", "create", "--name", "ops", "--scope", "write")
    assert result.returncode == 0, result.stderr[-3000:]

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS_DIR / "exifr__test_fixtures_issue-exifr-3.jpg", photos)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run(
        str(trashmap),
        "up",
        "--untrained",
        "--port",
        str(port),
        "--demo",
        str(photos),
        "--exit-after-demo",
        "--demo-timeout",
        "300",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "done" in result.stdout and "from an UNTRAINED model" in result.stdout, result.stdout
