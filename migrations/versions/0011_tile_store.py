"""tile store (PostgreSQL only): built tiles shared by every process, and a covering point index

`tile_store` keeps the bytes of unfiltered vector tiles with the signature (migration 0009)
they were built under, so a process whose own cache lacks a tile reads it in the statement
that reads the signature instead of building it; `trashmap tiles seed` fills it ahead of
the first visitor. A stored tile whose signature no longer matches is never served.

`ix_detections_pt` gains the columns tiles read (INCLUDE), so a tile's detections come
from an index-only scan rather than one heap page per detection.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a tile reads from a detection (web/query/tiles.py), besides the point itself.
COVERED = "id, photo_id, model_version_id, label, score, lat, lon"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE TABLE tile_store (key text PRIMARY KEY, z smallint NOT NULL, x integer NOT NULL, "
        "y integer NOT NULL, epoch bigint NOT NULL, changes bigint NOT NULL, "
        "data bytea NOT NULL, built_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("DROP INDEX IF EXISTS ix_detections_pt")
    op.execute(f"CREATE INDEX ix_detections_pt ON detections USING spgist (pt) INCLUDE ({COVERED})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TABLE IF EXISTS tile_store")
    op.execute("DROP INDEX IF EXISTS ix_detections_pt")
    op.execute("CREATE INDEX ix_detections_pt ON detections USING spgist (pt) INCLUDE (id)")
