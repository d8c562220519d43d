"""The `trashmap` command's help and its refusals."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from tests.conftest import ROOT
from trashmap.cli import cli


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "web", "worker", "db", "upload"):
        assert f"  {command} " in result.output


def test_worker_refuses_to_start_without_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env["TRASHMAP_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "trashmap", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TRASHMAP_WEIGHTS" in result.stderr and "--untrained" in result.stderr


def test_bad_setting_names_the_variable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(os.environ, TRASHMAP_SCORE_THRESHOLD="high", TRASHMAP_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "trashmap", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TRASHMAP_SCORE_THRESHOLD" in result.stderr
