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
from trashmap.versions import CHECKPOINT_KEY, VersionError


def register_checkpoint(session: Session, path: Path) -> tuple[ModelVersion, bool]:
    """The row for this checkpoint, created when new; (row, created). Flushes, never commits."""
    from ml.detector import CheckpointError, file_sha256, read_checkpoint

    path = path.expanduser().resolve()
    try:
        info, _ = read_checkpoint(path)
    except CheckpointError as exc:
        raise VersionError(str(exc)) from None
    sha256 = file_sha256(path)
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.name == info.name, ModelVersion.version == info.version
        )
    )
    metrics: dict[str, Any] = {**info.metrics, CHECKPOINT_KEY: str(path)}
    if row is not None:
        if row.weights_sha256 not in (None, sha256):
            raise VersionError(
                f"{info.name}:{info.version} is already registered with other weights "
                f"(sha256 {row.weights_sha256[:12]}...); give the new checkpoint a new version"
            )
        row.weights_sha256 = sha256
        row.metrics = {**(row.metrics or {}), **metrics}
        return row, False
    row = ModelVersion(
        name=info.name,
        version=info.version,
        arch=info.arch,
        weights_sha256=sha256,
        class_names=list(info.class_names),
        metrics=metrics,
    )
    session.add(row)
    session.flush()
    return row, True
