"""`ml bootstrap` end to end: a local HTTP server plays GitHub and Flickr, PostgreSQL is real."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from ml.bootstrap import STAGES, STATE, SUMMARY
from ml.cli import ml
from ml.cross_validate import SUMMARY as CV_SUMMARY
from ml.synthetic import ShapesSpec, make_shapes_dataset
from tests.conftest import settings_env
from tests.ml.test_cross_validate import TINY
from trashmap.settings import Settings

UNREACHABLE = "postgresql+psycopg2://postgres@127.0.0.1:1/none"


class _Files(SimpleHTTPRequestHandler):
    hits: Counter = Counter()

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits[self.path] += 1
        super().do_GET()


@pytest.fixture
def taco_server(tmp_path: Path) -> Iterator[str]:
    """Serves a generated dataset whose annotation file points at this server's images."""
    root = tmp_path / "served"
    make_shapes_dataset(root, ShapesSpec(images=10, negatives=2, seed=7))
    _Files.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=root))
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    coco = json.loads((root / "annotations.json").read_text())
    for image in coco["images"]:
        image["flickr_url"] = f"{base}/{image['file_name']}"
    (root / "taco.json").write_text(json.dumps(coco))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"{base}/taco.json"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def active_restored(pg_engine: sa.Engine) -> Iterator[sa.Engine]:
    """Whichever version was active before the test is active again after it."""
    with pg_engine.connect() as conn:
        before = conn.scalar(sa.text("SELECT id FROM model_versions WHERE active LIMIT 1"))
    yield pg_engine
    with pg_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE model_versions SET active = COALESCE(id = :id, false)"), {"id": before}
        )


def _database(monkeypatch: pytest.MonkeyPatch, settings: Settings, url: str) -> None:
    for key, value in settings_env(settings).items():
        if key.startswith("TRASHMAP_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRASHMAP_DATABASE_URL", url)


@pytest.mark.slow
def test_bootstrap_resumes_after_a_failed_register_then_skips_everything(
    taco_server: str,
    tmp_path: Path,
    pg_settings: Settings,
    active_restored: sa.Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """About 25 s of CPU: three tiny trainings (2 folds + final) and one register process."""
    out = tmp_path / "boot"
    args = ["bootstrap", "--out", str(out), "--annotations-url", taco_server, "--folds", "2"]
    runner = CliRunner()

    # 1. No database: everything up to the register stage finishes, then it fails and says why.
    _database(monkeypatch, pg_settings, UNREACHABLE)
    first = runner.invoke(ml, [*args, *TINY])
    assert first.exit_code == 1, first.output
    assert "database: cannot reach the database" in first.output  # warned at the start
    assert "registering" in first.output and "rerun" in first.output
    state = json.loads((out / STATE).read_text())
    assert list(state["stages"]) == ["download", "cv", "final", "card"]
    assert len(list((out / "images" / "shapes").glob("*.jpg"))) == 12
    assert state["stages"]["download"]["images"] == 12
    cv_summary = json.loads((out / "cv" / CV_SUMMARY).read_text())
    assert cv_summary["folds"] == 2 and len(cv_summary["per_fold"]) == 2
    checkpoint = out / "final" / "best.pt"
    assert checkpoint.is_file()
    kept = {p: p.stat().st_mtime_ns for p in [checkpoint, *out.glob("cv/fold_*/metrics.json")]}
    downloads = sum(_Files.hits.values())
    assert downloads == 13  # the annotation file and 12 images

    # 2. With the database: only the register stage runs.
    _database(monkeypatch, pg_settings, pg_settings.database_url)
    second = runner.invoke(ml, [*args, *TINY])
    assert second.exit_code == 0, second.output
    for stage in ("download", "cv", "final", "card"):
        assert f"{stage}: finished" in second.output and "skipped" in second.output
    assert "[5/5] register: started" in second.output
    assert sum(_Files.hits.values()) == downloads  # nothing fetched again
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # no fold or final model retrained
    registered = json.loads((out / STATE).read_text())["stages"]["register"]
    with active_restored.connect() as conn:
        row = conn.execute(
            sa.text("SELECT id, active, metrics, card FROM model_versions WHERE id = :id"),
            {"id": registered["id"]},
        ).one()
    assert row.active and registered["active"]
    assert row.metrics["checkpoint_path"] == str(checkpoint.resolve())
    assert f"model version {row.id}" in second.output and "active" in second.output
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["register"]["id"] == row.id
    assert summary["cv"]["metrics"]["map"]["mean"] == cv_summary["mean"]["map"]
    assert summary["final"]["checkpoint"] == str(checkpoint.resolve())
    # The card: the final model's, stored with the version, plus the folds' scores in OUT.
    assert row.card["model"]["version"] == summary["model_card"]["model"]["version"]
    assert summary["model_card"]["cross_validation"]["folds"] == 2
    assert row.card["cross_validation"]["folds"] == 2  # the registry's card has the CV too
    assert any("2-fold cross-validation" in limit for limit in row.card["limits"])
    assert "2-fold cross-validation" in (out / "MODEL_CARD.md").read_text()

    # 3. Everything finished: a rerun skips every stage, and quickly.
    started = time.monotonic()
    third = runner.invoke(ml, [*args, *TINY])
    assert third.exit_code == 0, third.output
    assert third.output.count("skipped") == len(STAGES)
    assert time.monotonic() - started < 10
    assert sum(_Files.hits.values()) == downloads

    # 4. Another recipe in the same folder is refused, naming what changed.
    changed = [*TINY[: TINY.index("--epochs") + 1], "2", *TINY[TINY.index("--epochs") + 2 :]]
    fourth = runner.invoke(ml, [*args, *changed])
    assert fourth.exit_code == 1
    assert "train.epochs 1 -> 2" in fourth.output


def test_a_missing_annotation_file_stops_with_the_reason(tmp_path: Path, taco_server: str) -> None:
    missing = taco_server.replace("taco.json", "nothing.json")
    result = CliRunner().invoke(
        ml,
        [
            "bootstrap",
            "--out",
            str(tmp_path / "boot"),
            "--annotations-url",
            missing,
            "--no-register",
            *TINY,
        ],
    )
    assert result.exit_code == 1
    assert "nothing.json: HTTP 404" in result.output
    assert not (tmp_path / "boot" / "annotations.json").exists()
