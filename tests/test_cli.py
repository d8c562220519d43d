"""The `trashmap` command's help and its refusals: one line on stderr, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from trashmap.cli import cli
from trashmap.cli.client import UploadResult, describe


def _env(**extra: str) -> dict[str, str]:
    """This environment without any TRASHMAP_* setting (the embedded default) plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def _trashmap(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trashmap", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "web", "worker", "db", "upload", "keys", "models"):
        assert f"  {command} " in result.output


def test_worker_refuses_to_start_without_weights(tmp_path: Path) -> None:
    env = _env(TRASHMAP_DATA_DIR=str(tmp_path))
    assert _trashmap("db", "upgrade", cwd=ROOT, env=env).returncode == 0
    line = _one_line_refusal(_trashmap("worker", cwd=ROOT, env=env))
    assert "TRASHMAP_WEIGHTS" in line and "--untrained" in line


def test_bad_setting_names_the_variable(tmp_path: Path) -> None:
    env = _env(TRASHMAP_SCORE_THRESHOLD="high", TRASHMAP_DATA_DIR=str(tmp_path))
    line = _one_line_refusal(_trashmap("db", "upgrade", cwd=ROOT, env=env))
    assert "TRASHMAP_SCORE_THRESHOLD" in line


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "create", "--name", "ops", "--scope", "write"),
        ("keys", "list"),
        ("models", "list"),
        ("reconcile",),
        ("db", "current"),
        ("worker", "--untrained"),
        ("web",),
    ],
)
def test_commands_outside_the_checkout_name_db_upgrade_and_create_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    line = _one_line_refusal(_trashmap(*args, cwd=tmp_path, env=_env()))
    assert "trashmap db upgrade" in line
    assert str(tmp_path / "var" / "trashmap.db") in line  # the data folder, made absolute
    assert not (tmp_path / "var" / "trashmap.db").exists()


def test_a_database_behind_the_migrations_is_refused(tmp_path: Path) -> None:
    env = _env(TRASHMAP_DATA_DIR=str(tmp_path))
    assert _trashmap("db", "upgrade", "0001", cwd=tmp_path, env=env).returncode == 0
    line = _one_line_refusal(_trashmap("keys", "list", cwd=tmp_path, env=env))
    assert "at revision 0001" in line and "trashmap db upgrade" in line
    assert _trashmap("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    result = _trashmap("keys", "create", "--name", "ops", "--scope", "write", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1].startswith("tm_")


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = _env(TRASHMAP_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/none")
    line = _one_line_refusal(_trashmap("models", "list", cwd=tmp_path, env=env))
    assert line.startswith("Error: cannot reach the database at postgresql")


def test_worker_on_a_device_it_cannot_use_exits_before_celery(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip(reason="this machine has a CUDA GPU: `--device cuda` is usable here")
    for args, env in (
        (("worker", "--untrained", "--device", "cuda"), _env()),
        (("worker", "--untrained"), _env(TRASHMAP_DEVICE="cuda:1")),
    ):
        line = _one_line_refusal(_trashmap(*args, cwd=tmp_path, env=env))
        assert line.startswith("Error: device cuda") and "is not available" in line
    assert not (tmp_path / "var").exists()


BLOCK_TORCH = (
    "import sys\n"
    "for name in ('torch', 'torchvision'):\n"
    "    sys.modules[name] = None  # what `import torch` meets when it is not installed\n"
    "from trashmap.cli import main\n"
    "sys.argv = ['trashmap', *sys.argv[1:]]\n"
    "main()\n"
)


def test_help_needs_no_torch_and_the_worker_names_its_extra(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", BLOCK_TORCH, *args],
            env=_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for args in (("--help",), ("web", "--help"), ("worker", "--help"), ("ml", "--help")):
        result = run(*args)
        assert result.returncode == 0, (args, result.stderr[-2000:])
    for args, extra in ((("worker",), "worker"), (("up",), "worker"), (("ml", "train"), "ml")):
        line = _one_line_refusal(run(*args))
        assert f"pip install 'trashmap[{extra}]'" in line, line


def test_result_lines_say_when_the_model_is_untrained() -> None:
    def line(untrained: bool) -> str:
        body = {
            "id": 7,
            "status": "done",
            "location": None,
            "model": {"name": "m", "version": "1", "untrained": untrained},
            "detections": [{"label": "class_3", "score": 0.99, "bbox": [0, 0, 1, 1]}],
        }
        return describe(UploadResult(Path("a.jpg"), 201, {"id": 7}, final=body))

    assert "1 detections from an UNTRAINED model (random boxes" in line(True)
    assert "UNTRAINED" not in line(False) and "1 detections (1x class_3)" in line(False)
