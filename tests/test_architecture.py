"""The import rule: web never loads torch, ml imports neither web nor worker."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_web_app_does_not_import_torch_or_the_worker(tmp_path: Path) -> None:
    code = (
        "import sys; from web import create_app;"
        "app = create_app();"
        "app.test_client().get('/healthz');"
        "roots = ('torch', 'torchvision', 'worker', 'ml');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in roots);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env["TRASHMAP_DATA_DIR"] = str(tmp_path)  # the embedded default, in a scratch folder
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imported_roots(package: str) -> set[str]:
    roots = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_import_directions() -> None:
    assert not {"web", "worker", "trashmap"} & _imported_roots("ml")
    assert not {"worker", "ml", "torch", "torchvision", "trashmap"} & _imported_roots("web")
    assert "trashmap" not in _imported_roots("worker")


def test_cli_help_does_not_import_torch() -> None:
    code = "import sys; from trashmap.cli import cli;sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
