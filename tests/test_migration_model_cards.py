"""Migration 0010 adds model_versions.card (JSONB on PostgreSQL) and takes it away again,
keeping the versions registered before it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from tests.conftest import embedded_settings, temporary_database
from trashmap import migrate
from trashmap.settings import Settings

INSERT = sa.text(
    "INSERT INTO model_versions (name, version, arch, class_names, active, created_at) "
    "VALUES ('before', '1', 'a', '[\"litter\"]', false, CURRENT_TIMESTAMP)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield embedded_settings(tmp_path)
        return
    with temporary_database("trashmap_card") as database_url:
        yield replace(Settings.from_env(), database_url=database_url)


def _card_column(engine: sa.Engine) -> dict[str, Any] | None:
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("model_versions")}
    return columns.get("card")


def test_card_column_up_and_down(settings: Settings) -> None:
    migrate.upgrade(settings, "0009")
    engine = sa.create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(INSERT)
        assert _card_column(engine) is None
        migrate.upgrade(settings, "0010")
        column = _card_column(engine)
        assert column is not None and column["nullable"]
        if engine.dialect.name == "postgresql":
            assert str(column["type"]) == "JSONB"
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT card FROM model_versions")).scalar() is None
        command.downgrade(migrate.alembic_config(settings), "0009")
        assert _card_column(engine) is None
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM model_versions")).scalar() == "before"
    finally:
        engine.dispose()
