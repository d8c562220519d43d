"""What a command checks before it starts: its settings, its extra, its database, its device.

A refusal is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from trashmap.settings import Settings


class Refused(click.ClickException):
    """A command cannot start; click prints `Error: <message>`."""

    exit_code = 2


def load_settings() -> Settings:
    """Settings.from_env, with a bad TRASHMAP_* value as a one-line refusal."""
    from trashmap.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise Refused(str(exc)) from None


def require_extra(extra: str, *modules: str) -> None:
    """Refuse when a module of the `extra` install option is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise Refused(
            f"this command needs trashmap's {extra} extra ({', '.join(missing)} not installed): "
            f"pip install 'trashmap[{extra}]'"
        )


def require_migrated(settings: Settings) -> None:
    """Refuse unless the database exists and is at the newest migration."""
    from trashmap.migrate import NotMigrated
    from trashmap.migrate import require_migrated as check

    try:
        check(settings)
    except NotMigrated as exc:
        raise Refused(str(exc)) from None


def migrated_settings() -> Settings:
    """The settings of a command that reads or writes the database."""
    settings = load_settings()
    require_migrated(settings)
    return settings


def require_device(device: str) -> None:
    """Refuse a torch device this machine cannot run ('auto' always has one)."""
    if device == "auto":
        return
    from ml.detector import resolve_device

    try:
        resolve_device(device)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Refused(f"device {device} is not available: {reason}") from None
