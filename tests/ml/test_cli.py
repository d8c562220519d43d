"""`trashmap ml`: help for every option, no torch at import, and the commands end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from PIL import Image

from ml.cli import ml
from ml.synthetic import save_with_orientation
from ml.train import TrainOptions, TrainResult
from ml.train_options import ARCHITECTURES
from tests.conftest import PHOTOS_DIR, ROOT

COMMANDS = [
    "download-taco",
    "explore",
    "train",
    "plot-log",
    "cv",
    "bootstrap",
    "evaluate",
    "predict",
]


def test_importing_the_cli_does_not_import_torch() -> None:
    heavy = ("torch", "torchvision", "numpy", "PIL", "matplotlib", "pycocotools")
    code = f"import sys, ml.cli; print([m for m in sys.modules if m.split('.')[0] in {heavy!r}])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_command_and_option_is_explained() -> None:
    assert sorted(ml.commands) == sorted(COMMANDS)
    for name in COMMANDS:
        command = ml.commands[name]
        assert command.help
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"
        result = CliRunner().invoke(ml, [name, "--help"])
        assert result.exit_code == 0 and "--" in result.output


def test_train_and_cv_share_every_training_option() -> None:
    train = {p.name for p in ml.commands["train"].params}
    cv = {p.name for p in ml.commands["cv"].params}
    fields = set(TrainOptions.__dataclass_fields__)
    assert fields - {"val_annotations", "test_annotations"} <= cv
    bootstrap = {p.name for p in ml.commands["bootstrap"].params}
    assert fields - {"annotations", "images", "val_annotations", "test_annotations"} <= bootstrap
    assert fields == train


def test_architecture_choices_match_the_detector() -> None:
    from ml.detector import ARCHITECTURES as BUILT
    from ml.detector import DEFAULT_ARCH

    assert set(ARCHITECTURES) == set(BUILT)
    assert TrainOptions.__dataclass_fields__["model"].default == DEFAULT_ARCH


def test_a_bad_class_set_fails_with_the_choices(shapes: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        ml,
        [
            "train",
            "--annotations",
            str(shapes / "annotations.json"),
            "--images",
            str(shapes),
            "--out",
            str(tmp_path),
            "--classes",
            "taco11",
            "--weights",
            "none",
        ],
    )
    assert result.exit_code == 1
    assert "unknown class set 'taco11'" in result.output and "taco15" in result.output


def test_explore_command(shapes: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        ml,
        [
            "explore",
            "--annotations",
            str(shapes / "annotations.json"),
            "--images",
            str(shapes),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "12 images" in result.output
    assert {"meta_df.csv", "stats.json", "supercategories.png", "samples.png"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_evaluate_command_writes_the_metrics(
    trained: tuple[TrainOptions, TrainResult], tmp_path: Path
) -> None:
    options, result = trained
    out = tmp_path / "metrics.json"
    done = CliRunner().invoke(
        ml,
        [
            "evaluate",
            "--weights",
            str(result.checkpoint),
            "--annotations",
            str(options.test_annotations),
            "--images",
            str(options.images),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert done.exit_code == 0, done.output
    metrics = json.loads(out.read_text())
    assert metrics["map50"] == pytest.approx(result.test_metrics["map50"], abs=1e-6)
    assert {"map", "map50", "map75", "map_small", "map_medium", "map_large", "per_class"} <= set(
        metrics
    )


def test_predict_on_jpeg_png_heic_with_exif_orientation(
    trained: tuple[TrainOptions, TrainResult], tmp_path: Path
) -> None:
    import pillow_heif

    options, result = trained
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source = sorted((options.images / "test").glob("*.jpg"))
    upright = Image.open(source[0])
    save_with_orientation(upright, inputs / "rotated.jpg", orientation=6)
    Image.open(source[1]).save(inputs / "plain.png")
    pillow_heif.from_pillow(Image.open(source[2])).save(inputs / "phone.heic", quality=90)
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    phone = PHOTOS_DIR / "exifsamples__heic_mobile_iphone_13_pro_max.HEIC"
    shutil.copy(phone, inputs / "iphone.HEIC")  # a real iPhone HEIC, EXIF-rotated
    out = tmp_path / "out"
    done = CliRunner().invoke(
        ml,
        [
            "predict",
            "--weights",
            str(result.checkpoint),
            str(inputs),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            "--score-threshold",
            "0.3",
        ],
    )
    assert done.exit_code == 0, done.output
    report = json.loads((out / "detections.json").read_text())
    by_file = {e["file"]: e for e in report["images"]}
    expected = {"rotated.jpg", "plain.png", "phone.heic", "broken.jpg"}
    assert expected <= set(by_file) and "notes.txt" not in by_file
    assert "cannot be decoded" in by_file["broken.jpg"]["error"]
    rotated = by_file["rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == upright.size  # EXIF orientation applied
    assert report["model"]["classes"] == ["litter"] and report["model"]["score_threshold"] == 0.3
    found = 0
    for name in ("rotated.jpg", "plain.png", "phone.heic"):
        entry = by_file[name]
        annotated = Image.open(out / entry["annotated"])
        assert annotated.size == (entry["width"], entry["height"])
        for det in entry["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 < x2 <= entry["width"] and 0 <= y1 < y2 <= entry["height"]
            assert det["label"] == "litter" and det["score"] >= 0.3
            found += 1
    assert found > 0  # the trained model finds shapes in the photos it is shown
    assert (by_file["iphone.HEIC"]["width"], by_file["iphone.HEIC"]["height"]) == (3024, 4032)
