"""The model version registry: find a version, activate one, find the active one.

Registering a checkpoint reads it with ml/ and lives in worker/versions.py.

A checkpoint's path is kept in the row's `metrics` JSON under `checkpoint_path` (no schema
change): every worker must be able to read that path (a shared or identical mount).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from trashmap.db import row_id
from trashmap.models import Detection, ModelVersion
from trashmap.settings import Settings

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "checkpoint_path"
# The checkpoint key of its model card (ml/model_card.py), stored as ModelVersion.card.
CARD_KEY = "card"


class VersionError(ValueError):
    """A model version cannot be found, registered or loaded as asked."""


@dataclass(frozen=True)
class VersionRef:
    """What a worker needs to know to load a registered version."""

    id: int
    label: str
    weights_sha256: str | None
    checkpoint: Path | None


def ref_of(row: ModelVersion) -> VersionRef:
    path = (row.metrics or {}).get(CHECKPOINT_KEY)
    return VersionRef(row.id, row.label, row.weights_sha256, Path(path) if path else None)


def find_version(session: Session, ref: str) -> ModelVersion:
    """A version by id (`3`), `name:version`, or a version string that is unique.

    An all-digit ref (a timestamp version, the default) may be either an id or a version
    string: whichever exists is taken, and both at once is an error that says so.
    """
    if ":" in ref:
        name, version = ref.split(":", 1)
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
        )
        if row is None:
            raise VersionError(f"no model version {ref!r}; registered: {_known(session)}")
        return row
    rows = list(session.scalars(select(ModelVersion).where(ModelVersion.version == ref)))
    number = row_id(ref)
    by_id = session.get(ModelVersion, number) if number is not None else None
    if by_id is not None and by_id not in rows:
        rows.insert(0, by_id)
    if len(rows) > 1:
        names = ", ".join(f"id {r.id} ({r.label})" for r in rows)
        raise VersionError(
            f"{ref!r} is ambiguous: it names {names}; use NAME:VERSION"
            + (" (an id matches too)" if by_id is not None else "")
        )
    if not rows:
        raise VersionError(f"no model version {ref!r}; registered: {_known(session)}")
    return rows[0]


def _known(session: Session) -> str:
    return ", ".join(f"{r.id} ({r.label})" for r in list_versions(session)) or "none"


def activate(session: Session, row: ModelVersion) -> None:
    """Make `row` the one active version (a single UPDATE, so never two at once)."""
    if ref_of(row).checkpoint is None:
        raise VersionError(
            f"{row.label} has no checkpoint on record (a worker registered it); "
            "register a checkpoint file with `trashmap models register`"
        )
    session.execute(update(ModelVersion).values(active=ModelVersion.id == row.id))
    logger.info("model version %s (%s) is now active", row.id, row.label)


def active_version(session: Session) -> VersionRef | None:
    """The active version, or None; a cheap indexed-by-size query (the table is tiny)."""
    row = session.scalar(select(ModelVersion).where(ModelVersion.active.is_(True)).limit(1))
    return ref_of(row) if row is not None else None


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def detection_counts(session: Session) -> dict[int, int]:
    """Stored detections per model version id."""
    rows = session.execute(
        select(Detection.model_version_id, func.count()).group_by(Detection.model_version_id)
    )
    return {version_id: count for version_id, count in rows}


def any_active(settings: Settings) -> bool:
    """True when the database names an active model version (a worker's start-up check)."""
    from sqlalchemy.exc import DBAPIError

    from trashmap.db import make_engine, make_session_factory

    engine = make_engine(settings)
    try:
        with make_session_factory(engine)() as session:
            return active_version(session) is not None
    except DBAPIError:  # unreachable or not migrated yet: no version can be active
        return False
    finally:
        engine.dispose()
