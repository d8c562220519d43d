"""Longer soak runs of the worker fault scenarios, printing RELIABILITY.md's counts.

    python bench/soak_workers.py \
        --database-url postgresql+psycopg2://postgres@127.0.0.1/trashmap_soak \
        --broker-url redis://127.0.0.1:6379/13 --kills 40 --redis-outage-s 60

Scenarios (all by default; pick with --only):
- kill: 2 workers, uploads going on, --kills SIGKILLs of a random worker's process group at
  random moments, each restarted;
- redis: --clients clients upload to gunicorn while a private Redis (the broker and the
  rate limits' store) is stopped for --redis-outage-s seconds;
- postgres: a private PostgreSQL is stopped for --pg-down-s seconds while workers are
  mid-batch on --pg-photos photos.

The database named by --database-url is dropped and created again; the Redis and
PostgreSQL servers the redis/postgres scenarios stop are private ones on free ports.
Only loopback addresses are used; the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.reliability.servers import PrivatePostgres, PrivateRedis  # noqa: E402
from tests.reliability.soak import (  # noqa: E402
    Counts,
    kill_soak,
    postgres_restart_soak,
    redis_outage_soak,
    table,
)
from trashmap import migrate  # noqa: E402
from trashmap.settings import Settings  # noqa: E402

SCENARIOS = ("kill", "redis", "postgres")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL (recreated)")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--only", choices=SCENARIOS, action="append", help="scenarios to run")
    parser.add_argument("--kills", type=int, default=40, help="SIGKILLs in the kill scenario")
    parser.add_argument(
        "--gap", type=float, nargs=2, default=(2.0, 9.0), help="seconds between kills (range)"
    )
    parser.add_argument("--upload-pause", type=float, default=1.5, help="kill scenario pause")
    parser.add_argument("--clients", type=int, default=4, help="uploaders (redis scenario)")
    parser.add_argument("--redis-outage-s", type=float, default=60)
    parser.add_argument("--pg-down-s", type=float, default=15)
    parser.add_argument("--pg-photos", type=int, default=24)
    parser.add_argument("--settle-wait", type=float, default=180, help="longest wait (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    return parser


def recreate(url: str) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()


def main(args: argparse.Namespace) -> int:
    recreate(args.database_url)
    workdir = Path(tempfile.mkdtemp(prefix="trashmap-soak-"))
    settings = Settings.from_env(
        database_url=args.database_url,
        broker_url=args.broker_url,
        queue_name=f"trashmap.soak.{uuid.uuid4().hex[:8]}",
        data_dir=workdir,
        score_threshold=0.0,
        rate_limit_enabled=False,
    )
    migrate.upgrade(settings)
    rows: list[tuple[str, Counts]] = []
    extra: dict[str, object] = {}
    for scenario in args.only or SCENARIOS:
        folder = workdir / scenario
        folder.mkdir()
        print(f"running {scenario} ...", flush=True)
        if scenario == "kill":
            result = kill_soak(
                settings,
                folder,
                args.kills,
                tuple(args.gap),  # type: ignore[arg-type]
                clients=1,
                pause_s=args.upload_pause,
                settle_wait_s=args.settle_wait,
                seed=args.seed,
            )
            name = f"{result.kills} x kill -9, 2 workers"
        elif scenario == "redis":
            redis_server = PrivateRedis(folder)
            redis_server.start()
            try:
                result = redis_outage_soak(
                    settings,
                    redis_server,
                    folder,
                    args.redis_outage_s,
                    clients=args.clients,
                    web_workers=2,
                    settle_wait_s=args.settle_wait,
                )
            finally:
                redis_server.stop()
            name = f"Redis down {args.redis_outage_s:g} s, {args.clients} clients"
            extra["redis_answers"] = dict(result.uploads.statuses)
            extra["redis_rate_limit_fallbacks"] = result.web_log.count(
                "falling back to in-memory storage"
            )
        else:
            pg = PrivatePostgres()
            try:
                pg.start()
                result = postgres_restart_soak(
                    replace(settings, queue_name=f"{settings.queue_name}.pg"),
                    pg,
                    folder,
                    args.pg_photos,
                    args.pg_down_s,
                    args.settle_wait,
                )
            finally:
                pg.destroy()
            name = f"PostgreSQL down {args.pg_down_s:g} s mid-batch"
        rows.append((name, result.counts))
        if result.uploads.errors:
            extra[f"{scenario}_errors"] = result.uploads.errors[:10]
        if result.counts.not_done:
            extra[f"{scenario}_not_done"] = result.counts.not_done
    print(table(rows))
    if extra:
        print(json.dumps(extra, indent=2, default=str))
    if args.json:
        args.json.write_text(
            json.dumps({"runs": {n: c.as_dict() for n, c in rows}, **extra}, indent=2)
        )
    ok = all(c.lost == 0 and c.duplicated == 0 and not c.not_done for _, c in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
