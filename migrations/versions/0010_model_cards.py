"""model cards: the checkpoint's model card stored with its model version

`trashmap models register` copies the card a checkpoint carries (written by `trashmap ml
train`, ml/model_card.py) into `model_versions.card`; `GET /api/v1/models` serves it.
Versions registered before, or from checkpoints without a card, keep NULL.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(
            sa.Column(
                "card", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("card")
