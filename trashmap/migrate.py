"""Run the Alembic migrations against the configured database, and tell whether it is migrated.

The migrations live in the top-level migrations/ folder of a source checkout; a wheel ships
the same folder as the package `trashmap.migrations`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from trashmap.settings import Settings


class NotMigrated(RuntimeError):
    """The database is missing, unreachable or not at the newest revision."""


def migrations_dir() -> Path:
    """migrations/ of the source checkout this module sits in, else the installed copy."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "migrations"
    if (package.parent / "pyproject.toml").is_file() and (checkout / "alembic.ini").is_file():
        return checkout
    return package / "migrations"


def alembic_config(settings: Settings) -> Config:
    folder = migrations_dir()
    config = Config(str(folder / "alembic.ini"))
    config.set_main_option("script_location", str(folder))
    config.attributes["database_url"] = settings.database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the schema up to `revision` (creates the SQLite file when needed)."""
    settings.ensure_data_dir()
    command.upgrade(alembic_config(settings), revision)


def check(settings: Settings) -> None:
    """Raise when the models and the migrated schema differ (alembic check)."""
    command.check(alembic_config(settings))


def current(settings: Settings) -> None:
    command.current(alembic_config(settings), verbose=True)


def database_exists(settings: Settings) -> bool:
    """False only for an SQLite file that is not there (connecting would create it empty)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return True
    return Path(url.database).is_file()


def require_migrated(settings: Settings) -> None:
    """Raise NotMigrated unless the database is at the newest revision; creates nothing."""
    from trashmap.db import make_engine

    where = settings.describe()["database_url"]
    hint = "run `trashmap db upgrade`"
    if not database_exists(settings):
        raise NotMigrated(f"the database at {where} does not exist: {hint}")
    heads = set(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            at = set(MigrationContext.configure(conn).get_current_heads())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise NotMigrated(f"cannot reach the database at {where}: {reason}") from None
    finally:
        engine.dispose()
    if at != heads:
        newest = ", ".join(sorted(heads))
        state = f"at revision {', '.join(sorted(at))}, not {newest}" if at else "not migrated"
        raise NotMigrated(f"the database at {where} is {state}: {hint}")
