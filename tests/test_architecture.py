"""The import rules: one Flask-free, torch-free core under web, worker and ml.

trashmap (the core) imports none of web, worker or ml, nor Flask or torch; only its `cli`
subpackage, the command that fronts everything, may. web never loads torch, worker or ml;
the worker process never loads Flask; ml imports neither web nor worker.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env["TRASHMAP_DATA_DIR"] = str(tmp_path)  # the embedded default, in a scratch folder
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _loaded(roots: tuple[str, ...]) -> str:
    return (
        f"roots = {roots!r};"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots);"
        "print(bad); sys.exit(1 if bad else 0)"
    )


def test_the_web_app_does_not_import_torch_or_the_worker(tmp_path: Path) -> None:
    code = (
        "import sys; from web import create_app;"
        "app = create_app();"
        "app.test_client().get('/healthz');" + _loaded(("torch", "torchvision", "worker", "ml"))
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_worker_does_not_import_flask(tmp_path: Path) -> None:
    code = (
        "import sys; from trashmap.settings import Settings;"
        "from worker.celery_app import create_celery;"
        "app = create_celery(Settings.from_env());"
        "import worker.tasks, worker.runtime, worker.pipeline, worker.loader, worker.reconcile;"
        "assert 'trashmap.detect_photo' in app.tasks;" + _loaded(("flask", "werkzeug", "web"))
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_core_imports_neither_flask_nor_torch(tmp_path: Path) -> None:
    core = [f"trashmap.{p.stem}" for p in (ROOT / "trashmap").glob("*.py") if p.stem != "__main__"]
    code = f"import sys, importlib; [importlib.import_module(m) for m in {core!r}];" + _loaded(
        ("flask", "werkzeug", "torch", "torchvision", "web", "worker", "ml")
    )
    result = _run(code, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_roots(folder: Path, exclude: str | None = None) -> set[str]:
    roots = set()
    for path in folder.rglob("*.py"):
        if exclude and exclude in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def _imported_modules(folder: Path) -> set[str]:
    modules = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
    return modules


HEAVY = {"flask", "werkzeug", "flask_limiter", "torch", "torchvision"}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("trashmap", {"web", "worker", "ml"} | HEAVY),
        ("ml", {"web", "worker"}),
        ("web", {"worker", "ml", "torch", "torchvision"}),
        ("worker", {"web", "flask", "werkzeug", "flask_limiter"}),
    ],
)
def test_import_directions(package: str, forbidden: set[str]) -> None:
    exclude = "cli" if package == "trashmap" else None
    assert not forbidden & _imported_roots(ROOT / package, exclude)


@pytest.mark.parametrize("package", ["web", "worker", "ml"])
def test_nothing_below_the_cli_imports_it(package: str) -> None:
    assert not {m for m in _imported_modules(ROOT / package) if m.startswith("trashmap.cli")}


def test_cli_help_does_not_import_torch() -> None:
    code = "import sys; from trashmap.cli import cli;sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
