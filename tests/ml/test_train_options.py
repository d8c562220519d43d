"""`trashmap ml train` and `cv` options come from TrainOptions: same flags, help and defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ml.cli import ml
from ml.train_options import FLAGS, TrainOptions

# The flags users' scripts pass; renaming one breaks them.
PUBLISHED_FLAGS = [
    "--annotations",
    "--images",
    "--out",
    "--val-annotations",
    "--test-annotations",
    "--model",
    "--classes",
    "--weights",
    "--trainable-backbone-layers",
    "--epochs",
    "--batch-size",
    "--accumulate",
    "--optimizer",
    "--lr",
    "--weight-decay",
    "--momentum",
    "--warmup-iters",
    "--schedule",
    "--lr-floor",
    "--ema",
    "--repeat-threshold",
    "--lr-patience",
    "--lr-factor",
    "--clip-grad",
    "--precise-bn",
    "--select-on",
    "--val-fraction",
    "--min-size",
    "--max-size",
    "--hflip",
    "--vflip",
    "--scale-jitter",
    "--photometric",
    "--rois-per-image",
    "--rpn-proposals",
    "--bn",
    "--other-litter",
    "--no-other-litter",
    "--keep-empty",
    "--drop-empty",
    "--device",
    "--amp",
    "--no-amp",
    "--workers",
    "--threads",
    "--seed",
    "--resume",
    "--val-images",
    "--score-threshold",
    "--slice",
    "--slice-overlap",
    "--name",
    "--version",
    "--tensorboard",
    "--no-tensorboard",
    "--progress",
    "--no-progress",
]
PER_FOLD = {"annotations", "images", "out", "val_annotations", "test_annotations"}


def help_entries(command: str) -> dict[str, str]:
    """Each option's help entry of `trashmap ml COMMAND --help`, keyed by every flag it has."""
    result = CliRunner().invoke(
        ml, [command, "--help"], terminal_width=10_000, max_content_width=10_000
    )
    assert result.exit_code == 0, result.output
    entries: list[str] = []
    for line in result.output.split("Options:\n", 1)[1].splitlines():
        if line.startswith("  --"):
            entries.append(line.strip())
        elif entries and line.startswith("      "):  # a long flag pushes its help down a line
            entries[-1] += " " + line.strip()
    by_flag = {}
    for entry in entries:
        flags = re.match(r"(--[\w-]+(?: / --[\w-]+)?)", entry)
        assert flags is not None, entry
        for flag in flags.group(1).split(" / "):
            by_flag[flag] = entry
    return by_flag


def shown_default(field: dataclasses.Field[Any], option: click.Option) -> str | None:
    """What click prints after `default:` for this field, None where it prints no default."""
    value = field.default
    if value is None or value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        if not option.secondary_opts:
            return None  # a lone flag (--resume) is simply absent by default
        shown = option.opts[0] if value else option.secondary_opts[0]
        return shown.removeprefix("--")
    if isinstance(value, tuple):  # a repeatable flag: click lists its values
        return ", ".join(map(str, value))
    return str(value)


@pytest.mark.parametrize("command", ["train", "cv"])
def test_help_shows_every_field_with_its_help_and_dataclass_default(command: str) -> None:
    entries = help_entries(command)
    options = {p.name: p for p in ml.commands[command].params if isinstance(p, click.Option)}
    fields = [
        f for f in dataclasses.fields(TrainOptions) if command == "train" or f.name not in PER_FOLD
    ]
    assert len(fields) == (55 if command == "train" else 50)
    for field in fields:
        flag = FLAGS[field.name]
        option = options[field.name]
        entry = entries[option.opts[0]]
        assert flag.help in entry, entry
        default = re.search(r"\[default: ([^;\]]+)", entry)
        expected = shown_default(field, option)
        if expected is None:
            assert default is None, entry
            assert ("[required]" in entry) == (field.default is dataclasses.MISSING), entry
        else:
            assert default is not None and default.group(1) == expected, entry


def test_every_published_flag_still_exists() -> None:
    train, cv = help_entries("train"), help_entries("cv")
    assert set(PUBLISHED_FLAGS) <= set(train)
    shared = [f for f in PUBLISHED_FLAGS if f not in {"--val-annotations", "--test-annotations"}]
    assert set(shared) <= set(cv)


def test_parsed_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    # What train receives with only the required flags is what TrainOptions would default to.
    args = ["--annotations", str(tmp_path / "a.json"), "--images", str(tmp_path)]
    (tmp_path / "a.json").write_text("{}")
    context = ml.commands["train"].make_context("train", [*args, "--out", str(tmp_path / "o")])
    parsed = TrainOptions(**context.params)
    assert parsed == TrainOptions(tmp_path / "a.json", tmp_path, tmp_path / "o")


def test_flags_reach_their_fields(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    args = ["--annotations", str(tmp_path / "a.json"), "--images", str(tmp_path)]
    args += ["--out", str(tmp_path / "o"), "--drop-empty", "--resume", "--no-amp"]
    args += ["--optimizer", "sgd", "--lr", "0.02", "--trainable-backbone-layers", "5"]
    parsed = TrainOptions(**ml.commands["train"].make_context("train", args).params)
    assert parsed.keep_empty is False and parsed.resume is True and parsed.amp is False
    assert (parsed.optimizer, parsed.lr, parsed.trainable_backbone_layers) == ("sgd", 0.02, 5)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--optimizer", "adam"), ("--hflip", "1.5"), ("--epochs", "0"), ("--model", "yolo")],
)
def test_values_outside_the_declared_choices_or_ranges_are_refused(
    flag: str, value: str, tmp_path: Path
) -> None:
    (tmp_path / "a.json").write_text("{}")
    args = ["train", "--annotations", str(tmp_path / "a.json"), "--images", str(tmp_path)]
    result = CliRunner().invoke(ml, [*args, "--out", str(tmp_path / "o"), flag, value])
    assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output
