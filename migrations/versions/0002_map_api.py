"""map API: API keys; on PostgreSQL, PostGIS points with GiST indexes

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The point columns are generated from lat/lon, so the worker and the upload keep writing
# plain floats; migrations/env.py leaves these PostGIS-only objects out of `alembic check`.
POINT_TABLES = ("photos", "detections")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    for table in POINT_TABLES:
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN geom geometry(Point, 4326) "
            "GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED"
        )
        op.execute(f"CREATE INDEX ix_{table}_geom ON {table} USING gist (geom)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in POINT_TABLES:
            op.execute(f"DROP INDEX IF EXISTS ix_{table}_geom")
            op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS geom")
        # Kept when something else in the database still uses PostGIS.
        op.execute(
            "DO $$ BEGIN DROP EXTENSION IF EXISTS postgis; "
            "EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END $$"
        )
    op.drop_table("api_keys")
