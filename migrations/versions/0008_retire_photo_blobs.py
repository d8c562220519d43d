"""retire photo_blobs: the table of original bytes is dropped once it is empty

A new database (and one whose blobs `trashmap storage migrate` has moved) loses the table
here. A deployment that still holds blobs keeps it, untouched, and goes on serving them
(reads fall back to it) until `trashmap storage migrate` has moved every one to storage
and drops it: nothing is deleted that has not been copied and verified.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trashmap.storage import retire_blob_table

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger(__name__)


def upgrade() -> None:
    left = retire_blob_table(op.get_bind())
    if left:
        logger.warning(
            "photo_blobs still holds %d photos' bytes: kept until `trashmap storage migrate` "
            "moves them to TRASHMAP_STORAGE_URL (it then drops the table)",
            left,
        )


def downgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("photo_blobs"):
        return
    op.create_table(
        "photo_blobs",
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["photos.id"],
            name=op.f("fk_photo_blobs_photo_id_photos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("photo_id", name=op.f("pk_photo_blobs")),
    )
