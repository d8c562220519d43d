"""Registering a checkpoint as a model version (reads the checkpoint with ml/, hence here).

The rest of the registry (find, activate, the active version) is torch-free, in
trashmap/versions.py, for the CLI and the web alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trashmap.models import ModelVersion
from trashmap.versions import CARD_KEY, CHECKPOINT_KEY, VersionError


def card_of(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's model card; None for checkpoints written before cards existed."""
    card = payload.get(CARD_KEY)
    return card if isinstance(card, dict) else None


def register_checkpoint(session: Session, path: Path) -> tuple[ModelVersion, bool]:
    """The row for this checkpoint, created when new; (row, created). Flushes, never commits.

    The checkpoint's model card, if it has one, is stored with the row.
    """
    from ml.detector import CheckpointError, file_sha256, read_checkpoint
    from ml.slicing import CHECKPOINT_KEY as SLICING_KEY

    path = path.expanduser().resolve()
    try:
        info, payload = read_checkpoint(path)
    except CheckpointError as exc:
        raise VersionError(str(exc)) from None
    sha256 = file_sha256(path)
    card = card_of(payload)
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.name == info.name, ModelVersion.version == info.version
        )
    )
    metrics: dict[str, Any] = {**info.metrics, CHECKPOINT_KEY: str(path)}
    if info.slicing:  # what its workers slice with, unless TRASHMAP_SLICE overrides it
        metrics[SLICING_KEY] = info.slicing
    if row is not None:
        if row.weights_sha256 not in (None, sha256):
            raise VersionError(
                f"{info.name}:{info.version} is already registered with other weights "
                f"(sha256 {row.weights_sha256[:12]}...); give the new checkpoint a new version"
            )
        row.weights_sha256 = sha256
        row.metrics = {**(row.metrics or {}), **metrics}
        # The same weights: a card already stored (`ml bootstrap` adds the CV to it) stays.
        row.card = row.card or card
        return row, False
    row = ModelVersion(
        name=info.name,
        version=info.version,
        arch=info.arch,
        weights_sha256=sha256,
        class_names=list(info.class_names),
        metrics=metrics,
        card=card,
    )
    session.add(row)
    session.flush()
    return row, True
