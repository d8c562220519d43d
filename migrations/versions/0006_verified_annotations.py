"""verified annotations: reviewed box sets per photo, every earlier set kept

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "annotation_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.Integer(), nullable=False),
        sa.Column("no_litter", sa.Boolean(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=128), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_annotation_sets_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["photos.id"],
            name=op.f("fk_annotation_sets_photo_id_photos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotation_sets")),
    )
    op.create_index(
        "ix_annotation_sets_photo_id_id", "annotation_sets", ["photo_id", "id"], unique=False
    )
    op.create_table(
        "annotation_boxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("x1", sa.Float(), nullable=False),
        sa.Column("y1", sa.Float(), nullable=False),
        sa.Column("x2", sa.Float(), nullable=False),
        sa.Column("y2", sa.Float(), nullable=False),
        sa.CheckConstraint("x2 > x1 AND y2 > y1", name=op.f("ck_annotation_boxes_box_ordered")),
        sa.ForeignKeyConstraint(
            ["set_id"],
            ["annotation_sets.id"],
            name=op.f("fk_annotation_boxes_set_id_annotation_sets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_annotation_boxes")),
    )
    op.create_index("ix_annotation_boxes_set_id", "annotation_boxes", ["set_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_annotation_boxes_set_id", table_name="annotation_boxes")
    op.drop_table("annotation_boxes")
    op.drop_index("ix_annotation_sets_photo_id_id", table_name="annotation_sets")
    op.drop_table("annotation_sets")
