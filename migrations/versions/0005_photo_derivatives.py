"""photo derivatives: the public image's renditions, computed once per photo and size

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_table("photo_derivatives")
