"""docker-compose.yml and .env.example say what the code does (no Docker engine runs here)."""

from __future__ import annotations

import re
from dataclasses import fields

import yaml
from click.testing import CliRunner

from tests.conftest import ROOT
from trashmap.cli import cli
from trashmap.settings import Settings


def test_compose_file_names_real_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker"} <= set(services)
    assert "postgis" in services["postgres"]["image"]
    for name in ("migrate", "web", "worker"):
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
    assert services["worker"]["environment"]["TRASHMAP_WEIGHTS"]


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"TRASHMAP_[A-Z_]+", text))
    source = (ROOT / "web" / "settings.py").read_text()
    read = set(re.findall(r'"(TRASHMAP_[A-Z_]+)"', source))
    assert read and read <= documented, read - documented
    assert len(fields(Settings)) >= len(read) - 1
