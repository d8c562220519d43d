"""tile changes (PostgreSQL only): a per-cell change counter that validates cached tiles

Every write to `detections` appends, per rollup cell (levels 0..10, the cells of migration
0003) that a changed row was or is in, the number of changed rows to `tile_change_deltas`;
`trashmap_fold_tile_changes()` (run by trashmap.rollup.fold with the grid-count fold) adds
them into `tile_changes`. A cell's counter, the sum over both tables, only ever grows, and
grows with every committed change, so a tile built when the cells it covers summed to S
is still right exactly while they sum to S. TRUNCATE bumps `tile_epoch` instead: the
counters stay, every cached tile is stale. web/query/tiles.py reads them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# web/query/tiles.py reads the counters with the same constants (MAX_LEVEL as in 0003).
MAX_LEVEL = 10
FOLD_LOCK_KEY = 7_351_245_002
KEY = "level, cx, cy"
COLUMNS = "level smallint NOT NULL, cx integer NOT NULL, cy integer NOT NULL, n bigint NOT NULL"


def changes_of(source: str) -> str:
    """SELECT of (level, cx, cy, changed rows) for the rows of `source`, at every level."""
    return f"""
    SELECT lv.level, floor(d.lon / lv.cell)::int, floor(d.lat / lv.cell)::int, count(*)
    FROM {source} AS d
    CROSS JOIN (SELECT level, 45.0::float8 / power(2::float8, level) AS cell
                FROM generate_series(0, {MAX_LEVEL}) AS level) AS lv
    WHERE d.lat IS NOT NULL AND d.lon IS NOT NULL
    GROUP BY 1, 2, 3"""


TRIGGERS = {
    # name: (event, REFERENCING clause, changed rows)
    "insert": ("INSERT", "NEW TABLE AS new_rows", "new_rows"),
    "delete": ("DELETE", "OLD TABLE AS old_rows", "old_rows"),
    # Both where a row was and where it is now: a move changes both tiles.
    "update": (
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "(SELECT lat, lon FROM old_rows UNION ALL SELECT lat, lon FROM new_rows)",
    ),
}

FOLD = f"""
CREATE FUNCTION trashmap_fold_tile_changes() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock({FOLD_LOCK_KEY}) THEN
        RETURN -1;
    END IF;
    -- Keys in order, so concurrent upserts of the same cells never deadlock.
    WITH gone AS (DELETE FROM tile_change_deltas RETURNING {KEY}, n),
    summed AS (SELECT {KEY}, sum(n) AS n FROM gone GROUP BY {KEY} ORDER BY {KEY})
    INSERT INTO tile_changes AS t ({KEY}, n) SELECT {KEY}, n FROM summed
    ON CONFLICT ({KEY}) DO UPDATE SET n = t.n + excluded.n;
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Writers only append deltas (no row locks shared between workers), as for grid counts.
    op.execute(
        f"CREATE TABLE tile_changes ({COLUMNS}, CONSTRAINT pk_tile_changes PRIMARY KEY ({KEY}))"
    )
    op.execute(f"CREATE TABLE tile_change_deltas ({COLUMNS})")
    op.execute(f"CREATE INDEX ix_tile_change_deltas_cell ON tile_change_deltas ({KEY})")
    op.execute("CREATE TABLE tile_epoch (epoch bigint NOT NULL)")
    op.execute("INSERT INTO tile_epoch VALUES (0)")
    for name, (event, referencing, rows) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION trashmap_tile_changes_{name}() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN INSERT INTO tile_change_deltas ({KEY}, n) {changes_of(rows)}; "
            "RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER tile_changes_{name} AFTER {event} ON detections "
            f"REFERENCING {referencing} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION trashmap_tile_changes_{name}()"
        )
    op.execute(
        "CREATE FUNCTION trashmap_tile_changes_truncate() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN UPDATE tile_epoch SET epoch = epoch + 1; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER tile_changes_truncate AFTER TRUNCATE ON detections "
        "FOR EACH STATEMENT EXECUTE FUNCTION trashmap_tile_changes_truncate()"
    )
    op.execute(FOLD)
    op.execute(f"INSERT INTO tile_change_deltas ({KEY}, n) {changes_of('detections')}")
    op.execute("SELECT trashmap_fold_tile_changes()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in [*TRIGGERS, "truncate"]:
        op.execute(f"DROP TRIGGER IF EXISTS tile_changes_{name} ON detections")
        op.execute(f"DROP FUNCTION IF EXISTS trashmap_tile_changes_{name}()")
    op.execute("DROP FUNCTION IF EXISTS trashmap_fold_tile_changes()")
    for table in ("tile_epoch", "tile_change_deltas", "tile_changes"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
