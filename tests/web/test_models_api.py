"""`trashmap models register` stores a checkpoint's model card; GET /api/v1/models serves it
(null for a checkpoint written before cards existed)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import settings_env
from tests.web.conftest import make_token
from trashmap.cli import cli
from trashmap.models import ModelVersion

CARD = {
    "card_version": 1,
    "model": {"name": "carded", "arch": "fasterrcnn_mobilenet_v3_large_fpn"},
    "metrics": {"test": {"map": 0.25, "per_class_ap": {"litter": 0.25}}},
    "limits": ["generated test card"],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small checkpoint with a card and one without (as older training wrote them)."""
    from ml.detector import Detector, save_checkpoint

    folder = tmp_path_factory.mktemp("carded")
    detector = Detector.untrained(
        ["litter"], "fasterrcnn_mobilenet_v3_large_fpn", min_size=64, max_size=96
    )
    run = uuid.uuid4().hex[:8]
    paths = {}
    for name, extra in (("carded", {"card": CARD}), ("old", {})):
        info = dataclasses.replace(detector.info, name=name, version=run)
        paths[name] = save_checkpoint(folder / f"{name}.pt", detector.model, info, **extra)
    return paths


def test_register_stores_the_card_and_the_api_serves_it(  # type: ignore[no-untyped-def]
    pg_settings, pg_sessions, client, checkpoints
) -> None:
    runner = CliRunner(env=settings_env(pg_settings))
    try:
        for path in checkpoints.values():
            result = runner.invoke(cli, ["models", "register", str(path)])
            assert result.exit_code == 0, result.output
        with pg_sessions() as session:
            # Stored as JSONB on PostgreSQL: queryable inside the card.
            test_map = session.scalar(
                sa.text(
                    "SELECT card->'metrics'->'test'->>'map' FROM model_versions "
                    "WHERE name = 'carded'"
                )
            )
        assert test_map == "0.25"

        token = make_token(pg_sessions, "read:stats")
        response = client.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        served = {v["name"]: v for v in response.get_json()["versions"]}
        assert served["carded"]["card"] == CARD
        assert served["old"]["card"] is None
        for name in checkpoints:
            version = served[name]
            assert {"id", "name", "version", "active", "card"} <= set(version)
            assert version["active"] is False and version["class_names"] == ["litter"]

        # Registering again (same weights) keeps the card.
        again = runner.invoke(cli, ["models", "register", str(checkpoints["carded"])])
        assert again.exit_code == 0 and "already registered" in again.output
        with pg_sessions() as session:
            row = session.scalar(sa.select(ModelVersion).where(ModelVersion.name == "carded"))
            assert row is not None and row.card == CARD
    finally:
        with pg_sessions.begin() as session:
            session.execute(sa.delete(ModelVersion).where(ModelVersion.name.in_(checkpoints)))


def test_models_list_needs_a_key_and_takes_no_parameters(client, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/v1/models").status_code == 401
    token = make_token(pg_sessions, "export")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/models", headers=headers).status_code == 403
    token = make_token(pg_sessions, "read:stats", name="reader")
    bad = client.get("/api/v1/models?page=2", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "unknown_parameter"
