"""Per-app services (engine, sessions, queue) and the one session each request uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import make_engine, make_session_factory
from trashmap.queue import DetectionQueue
from trashmap.settings import Settings
from trashmap.storage import Storage, open_storage


@dataclass
class Services:
    """What every request may need; built once per app."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    queue: DetectionQueue

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = make_engine(settings)
        return cls(settings, engine, make_session_factory(engine), DetectionQueue(settings))

    @staticmethod
    def close_request_session(_exc: BaseException | None = None) -> Any:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def services() -> Services:
    return current_app.extensions["trashmap"]


def storage() -> Storage:
    """The app's photo storage (trashmap.storage), opened on first use."""
    extensions = current_app.extensions
    if "trashmap.storage" not in extensions:
        extensions["trashmap.storage"] = open_storage(services().settings)
    found: Storage = extensions["trashmap.storage"]
    return found


def db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = services().sessions()
    return g.db_session
