"""`trashmap bench slicing --json`: trains once on crops, scores whole-photo and sliced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ml.detector import read_checkpoint
from ml.slicing import checkpoint_slicing
from ml.slicing_bench import REPORT
from trashmap.cli import cli

METRICS = ("map", "map_small", "map50")


@pytest.mark.slow
def test_the_bench_reports_both_passes_of_one_crop_trained_checkpoint(tmp_path: Path) -> None:
    # The smallest settings that still run every stage; the figures mean nothing here.
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "slicing",
            "--out",
            str(tmp_path),
            "--train-photos",
            "2",
            "--test-photos",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--long-side",
            "240",
            "300",
            "--min-size",
            "64",
            "--max-size",
            "96",
            "--threads",
            "1",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name in METRICS:
        for variant in ("full", "sliced"):
            value = report[f"{name}_{variant}"]
            assert value is None or 0.0 <= value <= 1.0, (name, variant, value)
    assert report["map_full"] is not None and report["map_sliced"] is not None
    assert report["photos_per_s_full"] > 0 and report["photos_per_s_sliced"] > 0
    assert report["slice"] == {"size": 64, "overlap": 0.2}
    assert json.loads((tmp_path / REPORT).read_text())["full"]["images"] == 1
    # The checkpoint itself carries the tiles of its training crops.
    _, payload = read_checkpoint(tmp_path / "run" / "best.pt")
    assert checkpoint_slicing(payload).size == 64
