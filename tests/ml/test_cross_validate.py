"""`cv`: folds trained one at a time (as separate processes would), then summarised."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ml.cli import ml
from ml.cross_validate import SUMMARY, TABLE, CVOptions
from ml.cross_validate import main as cv_main
from ml.train import TrainOptions

TINY = [
    "--model",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "--weights",
    "none",
    "--classes",
    "all",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--min-size",
    "64",
    "--max-size",
    "86",
    "--rois-per-image",
    "16",
    "--rpn-proposals",
    "100",
    "--workers",
    "0",
    "--val-images",
    "0",
    "--val-fraction",
    "0.2",
    "--seed",
    "3",
    "--no-progress",
    "--no-tensorboard",
]


def test_cv_folds_side_by_side_then_summary(shapes: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    runner = CliRunner()
    common = [
        "--annotations",
        str(shapes / "annotations.json"),
        "--images",
        str(shapes),
        "--out",
        str(out),
        "--folds",
        "2",
    ]
    first = runner.invoke(ml, ["cv", *common, "--fold", "0", *TINY])
    assert first.exit_code == 0, first.output
    assert "fold 0 done" in first.output and not (out / SUMMARY).exists()

    # The second fold as another process would run it: same folds, same train options.
    options = TrainOptions(
        annotations=Path("."),
        images=Path("."),
        out=Path("."),
        model="fasterrcnn_mobilenet_v3_large_fpn",
        weights="none",
        classes="all",
        epochs=1,
        batch_size=4,
        lr=1e-3,
        min_size=64,
        max_size=86,
        rois_per_image=16,
        rpn_proposals=100,
        workers=0,
        val_images=0,
        val_fraction=0.2,
        seed=3,
        progress=False,
        tensorboard=False,
    )
    summary = cv_main(CVOptions(shapes / "annotations.json", shapes, out, folds=2, fold=1), options)
    assert summary is not None

    manifest = json.loads((out / "folds" / "folds.json").read_text())
    tests = [
        set(
            i["id"]
            for i in json.loads((out / "folds" / f"fold_{k}" / "test.json").read_text())["images"]
        )
        for k in (0, 1)
    ]
    assert not tests[0] & tests[1] and len(tests[0] | tests[1]) == 12
    assert manifest["seed"] == 3 and len(manifest["per_fold"]) == 2

    on_disk = json.loads((out / SUMMARY).read_text())
    assert on_disk == summary
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1]
    for fold in summary["per_fold"]:
        for key in ("map", "map50", "map75"):
            assert isinstance(fold[key], float) and 0.0 <= fold[key] <= 1.0
        assert all(fold[k] is None or 0.0 <= fold[k] <= 1.0 for k in ("map_small", "map_large"))
        assert set(fold["per_class"]) == {"circle", "square", "triangle"}
        assert (out / f"fold_{fold['fold']}" / "best.pt").is_file()
    maps = [f["map50"] for f in summary["per_fold"]]
    assert summary["mean"]["map50"] == sum(maps) / 2
    assert summary["std"]["map50"] >= 0 and "circle" in summary["mean"]["per_class"]
    table = (out / TABLE).read_text()
    assert "| fold | map | map50 |" in table and "| mean ± std |" in table

    again = runner.invoke(ml, ["cv", "--out", str(out), "--folds", "2", "--summarise"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / SUMMARY).read_text()) == summary


def test_summarise_names_the_missing_folds(tmp_path: Path) -> None:
    result = CliRunner().invoke(ml, ["cv", "--out", str(tmp_path), "--folds", "3", "--summarise"])
    assert result.exit_code == 1
    assert "folds [0, 1, 2] have no metrics.json" in result.output
