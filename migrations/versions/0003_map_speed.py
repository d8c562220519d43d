"""map speed (PostgreSQL only): detection points for index-only scans, per-cell count rollup

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# web/query/rollup.py reads the rollup with these same constants; changing them means a new
# migration that redefines the functions and rebuilds the tables.
MAX_LEVEL = 10
SCORE_THRESHOLDS = "ARRAY[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]::float8[]"
FOLD_LOCK_KEY = 7_351_245_001

KEY = "level, cx, cy, label, model_version_id, score_bin"
COLUMNS = """
    level smallint NOT NULL, cx integer NOT NULL, cy integer NOT NULL,
    label varchar(128) NOT NULL, model_version_id integer NOT NULL,
    score_bin smallint NOT NULL, n bigint NOT NULL"""


def cell_counts_of(source: str, sign: int) -> str:
    """SELECT of the per-cell count changes that the rows of `source` make, at every level.

    A cell of level z is 45 / 2^z degrees (an eighth of a zoom-z web-map tile), the same
    expression /grid uses, so both backends and both paths put a point in the same cell.
    """
    return f"""
    SELECT lv.level, floor(d.lon / lv.cell)::int, floor(d.lat / lv.cell)::int, d.label,
           d.model_version_id, width_bucket(d.score, {SCORE_THRESHOLDS}), {sign} * count(*)
    FROM {source} AS d
    CROSS JOIN (SELECT level, 45.0::float8 / power(2::float8, level) AS cell
                FROM generate_series(0, {MAX_LEVEL}) AS level) AS lv
    WHERE d.lat IS NOT NULL AND d.lon IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6"""


TRIGGERS = {
    # name: (event, REFERENCING clause, body)
    "insert": (
        "INSERT",
        "NEW TABLE AS new_rows",
        f"INSERT INTO grid_count_deltas ({KEY}, n) {cell_counts_of('new_rows', 1)};",
    ),
    "delete": (
        "DELETE",
        "OLD TABLE AS old_rows",
        f"INSERT INTO grid_count_deltas ({KEY}, n) {cell_counts_of('old_rows', -1)};",
    ),
    "update": (
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        f"INSERT INTO grid_count_deltas ({KEY}, n) SELECT {KEY}, sum(n) FROM ("
        f"{cell_counts_of('old_rows', -1)} UNION ALL {cell_counts_of('new_rows', 1)}"
        f") AS changes ({KEY}, n) GROUP BY {KEY} HAVING sum(n) <> 0;",
    ),
}

FOLD = f"""
CREATE FUNCTION trashmap_fold_grid_counts() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    moved bigint;
BEGIN
    -- One folder at a time; the others skip rather than queue behind it.
    IF NOT pg_try_advisory_xact_lock({FOLD_LOCK_KEY}) THEN
        RETURN -1;
    END IF;
    -- Keys in order, so concurrent upserts of the same cells never deadlock.
    WITH gone AS (DELETE FROM grid_count_deltas RETURNING {KEY}, n),
    summed AS (SELECT {KEY}, sum(n) AS n FROM gone GROUP BY {KEY} HAVING sum(n) <> 0
               ORDER BY {KEY})
    INSERT INTO grid_counts AS g ({KEY}, n) SELECT {KEY}, n FROM summed
    ON CONFLICT ({KEY}) DO UPDATE SET n = g.n + excluded.n;
    GET DIAGNOSTICS moved = ROW_COUNT;
    DELETE FROM grid_counts WHERE n = 0;
    RETURN moved;
END $$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # A plain point beside the PostGIS one: SP-GiST on points can answer bbox filters from
    # the index alone (with the id), which the GiST geometry index cannot.
    op.execute(
        "ALTER TABLE detections ADD COLUMN pt point GENERATED ALWAYS AS (point(lon, lat)) STORED"
    )
    op.execute("CREATE INDEX ix_detections_pt ON detections USING spgist (pt) INCLUDE (id)")

    # Writers only append to grid_count_deltas (no locks shared between workers); a fold
    # moves the deltas into grid_counts; readers add both, so counts are always exact.
    # No CHECK (n >= 0): PostgreSQL checks an upsert's proposed row, a negative delta,
    # before it finds the conflict that turns it into an update.
    op.execute(
        f"CREATE TABLE grid_counts ({COLUMNS}, CONSTRAINT pk_grid_counts PRIMARY KEY ({KEY}))"
    )
    op.execute("CREATE INDEX ix_grid_counts_empty ON grid_counts (level) WHERE n = 0")
    op.execute(f"CREATE TABLE grid_count_deltas ({COLUMNS})")
    op.execute("CREATE INDEX ix_grid_count_deltas_level ON grid_count_deltas (level)")
    for name, (event, referencing, body) in TRIGGERS.items():
        op.execute(
            f"CREATE FUNCTION trashmap_grid_counts_{name}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER grid_counts_{name} AFTER {event} ON detections "
            f"REFERENCING {referencing} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION trashmap_grid_counts_{name}()"
        )
    op.execute(
        "CREATE FUNCTION trashmap_grid_counts_truncate() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN TRUNCATE grid_counts, grid_count_deltas; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER grid_counts_truncate AFTER TRUNCATE ON detections "
        "FOR EACH STATEMENT EXECUTE FUNCTION trashmap_grid_counts_truncate()"
    )
    op.execute(FOLD)
    op.execute(f"INSERT INTO grid_count_deltas ({KEY}, n) {cell_counts_of('detections', 1)}")
    op.execute("SELECT trashmap_fold_grid_counts()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in [*TRIGGERS, "truncate"]:
        op.execute(f"DROP TRIGGER IF EXISTS grid_counts_{name} ON detections")
        op.execute(f"DROP FUNCTION IF EXISTS trashmap_grid_counts_{name}()")
    op.execute("DROP FUNCTION IF EXISTS trashmap_fold_grid_counts()")
    op.execute("DROP TABLE IF EXISTS grid_count_deltas")
    op.execute("DROP TABLE IF EXISTS grid_counts")
    op.execute("DROP INDEX IF EXISTS ix_detections_pt")
    op.execute("ALTER TABLE detections DROP COLUMN IF EXISTS pt")
