"""Migrations build an empty database on both backends, with no drift from the models."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa
from alembic.util.exc import CommandError

from tests.conftest import embedded_settings, temporary_database
from trashmap import migrate
from trashmap.models import Base
from trashmap.settings import Settings

TABLES = {"photos", "detections", "model_versions", "alembic_version"}


def _check_round_trip(settings: Settings) -> None:
    migrate.upgrade(settings)
    migrate.check(settings)  # raises on drift
    engine = sa.create_engine(settings.database_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) >= TABLES
        migrate.upgrade(settings, "head")  # idempotent
    finally:
        engine.dispose()
    from alembic import command

    command.downgrade(migrate.alembic_config(settings), "base")
    engine = sa.create_engine(settings.database_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_sqlite_upgrade_check_and_downgrade(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _check_round_trip(embedded_settings(tmp_path))


def test_postgresql_upgrade_check_and_downgrade() -> None:
    with temporary_database("trashmap_mig") as database_url:
        _check_round_trip(replace(Settings.from_env(), database_url=database_url))


def test_check_detects_drift(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = embedded_settings(tmp_path)
    migrate.upgrade(settings)
    column = sa.Column("drift_probe", sa.Integer)
    Base.metadata.tables["photos"].append_column(column)
    try:
        with pytest.raises(CommandError):
            migrate.check(settings)
    finally:
        Base.metadata.tables["photos"]._columns.remove(column)
