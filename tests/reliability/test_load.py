"""A short run of bench/load_upload.py: under concurrent load nothing is lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import REDIS_URL, ROOT, temporary_database


def test_concurrent_uploads_are_stored_once_and_all_processed(tmp_path, record) -> None:  # type: ignore[no-untyped-def]
    with temporary_database("trashmap_load") as database_url:
        out = tmp_path / "load.json"
        result = subprocess.run(
            [
                sys.executable,
                "bench/load_upload.py",
                "--database-url",
                database_url,
                "--broker-url",
                REDIS_URL,
                "--clients",
                "4",
                "--seconds",
                "4",
                "--burst-every",
                "1.5",
                "--drain-timeout",
                "300",
                "--json",
                str(out),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert out.exists(), result.stdout + result.stderr
        report = json.loads(out.read_text())
        # Check the database ourselves rather than trusting the script's own verdict.
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            stored = dict(conn.execute(sa.text("SELECT id, sha256 FROM photos")).all())
            statuses = set(conn.execute(sa.text("SELECT DISTINCT status FROM photos")).scalars())
        engine.dispose()
        acknowledged = dict(report["acknowledged"])
        record(
            acknowledged=len(acknowledged),
            duplicates_sent=report["answered_200_duplicate"],
            stored=len(stored),
            processed=report["processed_done"],
            lost=sum(stored.get(i) != sha for i, sha in acknowledged.items()),
            duplicated=len(stored) - len(set(stored.values())),
            uploads_per_s=report["uploads_per_s"],
            p95_ms=report["p95_ms"],
        )
        assert len(acknowledged) > 20, "too few uploads to say anything"
        assert report["answered_200_duplicate"] > 0, "no duplicate was ever sent"
        assert acknowledged == stored  # every 201 is exactly one stored photo, nothing else
        assert len(set(stored.values())) == len(stored)
        assert statuses == {"done"}
        assert report["other_statuses"] == {}
        assert report["jobs_run"] == len(stored)  # one detection job per stored photo
        assert report["jobs_run_more_than_once"] == 0
        assert result.returncode == 0, result.stdout[-2000:]
