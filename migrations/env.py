"""Alembic environment: metadata from trashmap.models, URL from the trashmap settings."""

from __future__ import annotations

import warnings
from logging.config import fileConfig

from alembic import context

from trashmap.db import make_engine
from trashmap.models import Base
from trashmap.settings import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


# Objects that only the PostgreSQL branch of a migration creates (the models stay
# portable): PostGIS's own table, the generated point columns with their indexes, and the
# trigger-kept grid count rollup (migration 0003, read by web/query/rollup.py) and tile
# change counters (migration 0009, read by web/query/tiles.py).
POSTGRESQL_ONLY = {
    "table": {
        "spatial_ref_sys",
        "grid_counts",
        "grid_count_deltas",
        "tile_changes",
        "tile_change_deltas",
        "tile_epoch",
        "tile_store",
    },
    "column": {"geom", "pt"},
    "index": {
        "ix_photos_geom",
        "ix_detections_geom",
        "ix_detections_pt",
        "ix_grid_counts_empty",
        "ix_grid_count_deltas_level",
        "ix_tile_change_deltas_cell",
    },
}


# Reflection does not know PostGIS types; the columns are skipped by include_object anyway.
warnings.filterwarnings("ignore", message="Did not recognize type '(geometry|point)'")


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Leave PostgreSQL-only objects out of autogenerate and `alembic check`, and the
    legacy photo_blobs table, which 0008 keeps until `trashmap storage migrate` empties it."""
    if reflected and compare_to is None and type_ == "table" and name == "photo_blobs":
        return False
    return not (reflected and compare_to is None and name in POSTGRESQL_ONLY.get(type_, ()))


def _url() -> str:
    return config.attributes.get("database_url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        include_object=include_object,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    settings = Settings.from_env(database_url=_url())
    engine = make_engine(settings)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
