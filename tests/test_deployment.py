"""docker-compose.yml, the Dockerfile and .env.example say what the code does (no Docker
engine runs here: the files are parsed and checked against the CLI and the settings)."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields

import yaml
from click.testing import CliRunner

from tests.conftest import ROOT
from trashmap.cli import cli
from trashmap.settings import Settings

SETTINGS_SOURCE = ROOT / "trashmap" / "settings.py"


def _settings_variables() -> set[str]:
    """Every TRASHMAP_* variable trashmap/settings.py reads."""
    return set(re.findall(r'"(TRASHMAP_[A-Z0-9_]+)"', SETTINGS_SOURCE.read_text()))


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Each `FROM ... AS name` stage's instructions, as (INSTRUCTION, arguments)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            current = stages.setdefault(args.split()[-1], [])
        current.append((instruction.upper(), args))
    return stages


def test_compose_file_names_real_commands() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "demo-worker"} <= set(services)
    assert "postgis" in services["postgres"]["image"]
    for name in ("migrate", "web", "worker", "demo-worker"):
        command = services[name]["command"]
        assert command[0] == "trashmap"
        # Each command parses: `--help` on the same words exits 0.
        result = CliRunner().invoke(cli, [*command[1:], "--help"])
        assert result.exit_code == 0, (name, result.output)
        env = services[name]["environment"]
        assert env["TRASHMAP_DATABASE_URL"].startswith("postgresql")
        assert env["TRASHMAP_BROKER_URL"].startswith("redis://")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_compose_uses_the_dockerfile_targets_and_real_settings() -> None:
    compose = _compose()
    services = compose["services"]
    stages = _dockerfile_stages()
    targets = {
        name: services[name]["build"]["target"] for name in services if "build" in services[name]
    }
    assert targets == {
        "migrate": "web",
        "web": "web",
        "worker": "worker",
        "demo-worker": "worker",
    }
    assert set(targets.values()) <= set(stages)
    # Every TRASHMAP_* name a service sets is a setting.
    settings = _settings_variables()
    for name, service in services.items():
        assert (
            set(k for k in service.get("environment", {}) if k.startswith("TRASHMAP_")) <= settings
        ), name
    # The weights: the worker's checkpoint is inside the folder it mounts.
    worker = services["worker"]
    weights = worker["environment"]["TRASHMAP_WEIGHTS"]
    mounts = [re.search(r":(/[^:]+)(:r[ow])?$", v).group(1) for v in worker["volumes"]]  # type: ignore[union-attr]
    assert any(weights.startswith(mount + "/") for mount in mounts), (weights, mounts)
    # The header names only variables the file uses.
    text = (ROOT / "docker-compose.yml").read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    named = set(re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", header)) - {"TRASHMAP_"}
    assert named - settings <= used, named - settings - used
    # The demo needs neither weights nor a GPU and stays out of a plain `up`.
    demo = services["demo-worker"]
    assert demo["profiles"] == ["demo"] and "--untrained" in demo["command"]
    assert "deploy" not in demo and "TRASHMAP_WEIGHTS" not in demo["environment"]
    assert "--scale worker=" in header


def test_images_run_as_an_unprivileged_user_that_owns_its_state() -> None:
    stages = _dockerfile_stages()
    assert {"web", "worker"} <= set(stages)
    data_dir = None
    for name in ("web", "worker"):
        # A stage inherits its base's instructions.
        chain, base = [], name
        while base in stages:
            chain = stages[base] + chain
            base = stages[base][0][1].split()[0]
        assert chain[0][1].split()[0].startswith("python:3.11-slim")
        users = [args for instruction, args in chain if instruction == "USER"]
        assert users and users[-1] == "trashmap", (name, users)
        env = " ".join(args for instruction, args in chain if instruction == "ENV")
        data_dir = re.search(r"TRASHMAP_DATA_DIR=(\S+)", env).group(1)  # type: ignore[union-attr]
        runs = " ".join(args for instruction, args in chain if instruction == "RUN")
        assert re.search(rf"install -d -o trashmap -g trashmap\b.*\s{re.escape(data_dir)}\b", runs)
        installs = [
            args for instruction, args in chain if instruction == "RUN" and "pip install" in args
        ]
        assert not any(" -e " in args for args in installs)  # the package, not the checkout
        extra = re.findall(r"\.whl\)\[(\w+)\]", " ".join(installs))
        assert extra == [name], (name, extra)
        torch = [args for args in installs if "torch==" in args]
        assert bool(torch) == (name == "worker")
    assert data_dir and data_dir.startswith("/") and not data_dir.startswith("/app")


def test_worker_image_and_bootstrap_pin_the_same_torch() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    pins = dict(re.findall(r'"(torch|torchvision)==([0-9.]+)"', bootstrap))
    dockerfile = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"ARG (TORCH_VERSION|TORCHVISION_VERSION)=([0-9.]+)", dockerfile))
    assert pins == {"torch": args["TORCH_VERSION"], "torchvision": args["TORCHVISION_VERSION"]}


def test_dockerignore_keeps_state_and_history_out_of_the_build() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "var", "tests", "frontend/node_modules", "*.pt"} <= ignored
    copied = {
        shlex.split(args)[0]
        for stage in _dockerfile_stages().values()
        for instruction, args in stage
        if instruction == "COPY" and not args.startswith("--from")
    }
    assert copied and not copied & ignored


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"TRASHMAP_[A-Z0-9_]+", text))
    read = _settings_variables()
    assert read and read <= documented, read - documented
    assert len(fields(Settings)) >= len(read) - 1
