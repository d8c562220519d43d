"""`trashmap ml cv`: K-fold cross-validation over images, each fold trained by `ml.train`.

Folds can run in one process, or side by side (`--fold K` per process or GPU) followed by a
summarise step; the fold files on disk are identical whichever process writes them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml import train
from ml.categories import load_class_set
from ml.coco_eval import SUMMARY_KEYS
from ml.data.coco_file import read_training_coco, write_json
from ml.splits import make_folds, write_folds
from ml.train import TrainOptions

logger = logging.getLogger(__name__)

SUMMARY = "cv_summary.json"
TABLE = "cv_summary.md"


@dataclass(frozen=True)
class CVOptions:
    """The data, where folds and runs go, how many folds, and which one(s) this process runs."""

    annotations: Path | None
    images: Path | None
    out: Path
    folds: int = 5
    fold: int | None = None
    summarise_only: bool = False


def fold_dir(out: Path, k: int) -> Path:
    """Where fold `k` trains and writes its metrics."""
    return out / f"fold_{k}"


def _data(cv: CVOptions) -> tuple[Path, Path]:
    """The annotation file and image folder, which every step but summarising needs."""
    if cv.annotations is None or cv.images is None:
        raise ValueError("--annotations and --images are needed to make and train folds")
    return cv.annotations, cv.images


def prepare(cv: CVOptions, options: TrainOptions) -> dict[str, Any]:
    """Make the folds (seeded by --seed) and write them under out/folds/."""
    annotations, _ = _data(cv)
    data = read_training_coco(annotations, options.extra_annotations)
    class_set = load_class_set(options.classes, data["categories"])
    folds = make_folds(data, class_set, cv.folds, options.seed, options.val_fraction)
    return write_folds(data, class_set, folds, cv.out / "folds", options.seed)


def run_fold(k: int, cv: CVOptions, options: TrainOptions) -> train.TrainResult:
    """Train fold k on its train split, pick its epoch on its val split, score its test split."""
    _, images = _data(cv)
    split = cv.out / "folds" / f"fold_{k}"
    fold_options = dataclasses.replace(
        options,
        annotations=split / "train.json",
        val_annotations=split / "val.json",
        test_annotations=split / "test.json",
        extra_annotations=None,  # merged into the folds already
        images=images,
        out=fold_dir(cv.out, k),
    )
    logger.info("fold %d of %d -> %s", k, cv.folds, fold_options.out)
    return train.main(fold_options)


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    std = statistics.stdev(defined) if len(defined) > 1 else 0.0
    return statistics.fmean(defined), std


def summarise(out: Path, folds: int) -> dict[str, Any]:
    """Collect every fold's test metrics into cv_summary.json and cv_summary.md."""
    missing = [k for k in range(folds) if not (fold_dir(out, k) / train.METRICS).is_file()]
    if missing:
        raise FileNotFoundError(f"folds {missing} have no {train.METRICS} under {out} yet")
    per_fold = []
    for k in range(folds):
        result = json.loads((fold_dir(out, k) / train.METRICS).read_text())
        test = result.get("test") or {}
        per_fold.append(
            {
                "fold": k,
                "best_epoch": result.get("best_epoch"),
                "val_map": (result.get("val") or {}).get("map"),
                **{key: test.get(key) for key in SUMMARY_KEYS},
                "per_class": test.get("per_class", {}),
                "per_class_ap50": test.get("per_class_ap50", {}),
            }
        )
    classes = list(per_fold[0]["per_class"])
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        mean[key], std[key] = _mean_std([f[key] for f in per_fold])
    for table in ("per_class", "per_class_ap50"):
        mean[table], std[table] = {}, {}
        for name in classes:
            mean[table][name], std[table][name] = _mean_std([f[table].get(name) for f in per_fold])
    manifest_path = out / "folds" / "folds.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    summary = {
        "folds": folds,
        "seed": manifest.get("seed"),
        "classes": classes,
        "absent_test_classes": {
            str(f["fold"]): f["test"]["absent_classes"] for f in manifest.get("per_fold", [])
        },
        "per_fold": per_fold,
        "mean": mean,
        "std": std,
    }
    write_json(summary, out / SUMMARY, indent=2)
    (out / TABLE).write_text(markdown(summary))
    return summary


def _cell(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if spread is None else f"{value:.3f} ± {spread:.3f}"


def markdown(summary: dict[str, Any]) -> str:
    """The summary as two markdown tables: per fold, and per class."""
    keys = list(SUMMARY_KEYS)
    lines = [
        f"## {summary['folds']}-fold cross-validation (seed {summary['seed']})",
        "",
        "Test-fold COCO box metrics of the checkpoint chosen on each fold's validation split.",
        "",
        "| fold | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for f in summary["per_fold"]:
        lines.append(f"| {f['fold']} | " + " | ".join(_cell(f[k]) for k in keys) + " |")
    mean, std = summary["mean"], summary["std"]
    lines.append("| mean ± std | " + " | ".join(_cell(mean[k], std[k]) for k in keys) + " |")
    lines += ["", "| class | AP | AP50 |", "|---|---|---|"]
    for name in summary["classes"]:
        lines.append(
            f"| {name} | {_cell(mean['per_class'][name], std['per_class'][name])} | "
            f"{_cell(mean['per_class_ap50'][name], std['per_class_ap50'][name])} |"
        )
    return "\n".join(lines) + "\n"


def main(cv: CVOptions, options: TrainOptions) -> dict[str, Any] | None:
    """Run the requested fold(s); summarise once every fold has finished."""
    if cv.summarise_only:
        return summarise(cv.out, cv.folds)
    if cv.fold is not None and not 0 <= cv.fold < cv.folds:
        raise ValueError(f"--fold must be in 0..{cv.folds - 1}, not {cv.fold}")
    prepare(cv, options)
    for k in [cv.fold] if cv.fold is not None else range(cv.folds):
        run_fold(k, cv, options)
    done = [k for k in range(cv.folds) if (fold_dir(cv.out, k) / train.METRICS).is_file()]
    if len(done) < cv.folds:
        logger.info("folds %s done; summarise after the others finish", done)
        return None
    summary = summarise(cv.out, cv.folds)
    logger.info(
        "cv: map %s, map50 %s",
        _cell(summary["mean"]["map"], summary["std"]["map"]),
        _cell(summary["mean"]["map50"], summary["std"]["map50"]),
    )
    return summary
