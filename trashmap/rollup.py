"""Folding the grid-count rollup that PostgreSQL triggers keep (migration 0003).

Every write to `detections` appends count changes per cell to `grid_count_deltas`;
`trashmap_fold_grid_counts()` moves them into `grid_counts`. Workers fold after each photo,
the reconciler and `trashmap reconcile` periodically. Readers add pending deltas in
(web/query/rollup.py), so a fold that fails or is late never makes a count wrong.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import session_scope

logger = logging.getLogger(__name__)


def fold(session: Session) -> int:
    """Move pending deltas into grid_counts (and the tile change counters of migration
    0009 into tile_changes); -1 when another fold is running."""
    session.execute(sa.text("SELECT trashmap_fold_tile_changes()"))
    return int(session.scalar(sa.text("SELECT trashmap_fold_grid_counts()")) or 0)


def fold_quietly(sessions: sessionmaker[Session]) -> None:
    """Fold after a write, on PostgreSQL. A failure only leaves the deltas for the next
    fold: readers add them in, so no count is wrong meanwhile."""
    try:
        with session_scope(sessions) as session:
            if session.get_bind().dialect.name == "postgresql":
                fold(session)
    except Exception:  # noqa: BLE001 - the caller's work is committed; never undo it here
        logger.warning("grid counts: fold failed; the next one picks the deltas up", exc_info=True)
