"""object storage: public renditions become storage objects, their table goes

Photo bytes move out of the database (trashmap.storage, TRASHMAP_STORAGE_URL). The
renditions kept in photo_derivatives (0005) are a cache: each is made again, into storage,
on its first request, so the table is dropped without copying. Originals are not touched
here: see 0008 and `trashmap storage migrate`.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("photo_derivatives")


def downgrade() -> None:
    op.create_table(
        "photo_derivatives",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["photos.sha256"],
            name=op.f("fk_photo_derivatives_sha256_photos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sha256", "size", name=op.f("pk_photo_derivatives")),
    )
