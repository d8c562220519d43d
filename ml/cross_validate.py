"""`trashmap ml cv`: K-fold cross-validation over images, each fold trained by `ml.train`.

Folds can run in one process, or side by side (`--fold K` per process or GPU) followed by a
summarise step; the fold files on disk are identical whichever process writes them.

The summary reports, per metric, the mean and standard deviation over folds and a
percentile-bootstrap 95% interval of that mean (scipy.stats.bootstrap); per class, AP with
the number of test boxes behind it; a class-agnostic `litter` AP; and, for `--classes
taco10`, the TACO paper's layout (TACO-1 and TACO-10 mean AP, then AP per TACO-10 class).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from ml import train
from ml.categories import load_class_set
from ml.coco_eval import SUMMARY_KEYS
from ml.data.coco_file import read_training_coco, write_json
from ml.splits import make_folds, write_folds
from ml.train import TrainOptions

logger = logging.getLogger(__name__)

SUMMARY = "cv_summary.json"
TABLE = "cv_summary.md"
# The class-agnostic metrics (every class merged into one, `litter`), as per-fold columns.
LITTER_KEYS = {f"litter_{key}": key for key in ("map", "map50", "map75")}
HEADLINE = (*SUMMARY_KEYS, *LITTER_KEYS)
BOOTSTRAP_RESAMPLES = 9999
# The class set the TACO paper (Proença & Simões 2020) reports results for.
TACO10 = "taco10"


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


def bootstrap_ci(values: list[float | None], seed: int) -> list[float] | None:
    """Percentile-bootstrap 95% interval of the mean over folds; None under two folds.

    With five folds it is coarse (at most 126 distinct resamples), and says so by its width.
    """
    defined = np.asarray([v for v in values if v is not None], dtype=float)
    if defined.size < 2:
        return None
    result = bootstrap(
        (defined,),
        np.mean,
        confidence_level=0.95,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def _fold_entry(k: int, result: dict[str, Any]) -> dict[str, Any]:
    test = result.get("test") or {}
    litter = test.get("litter") or {}  # absent from runs older than the litter AP
    return {
        "fold": k,
        "best_epoch": result.get("best_epoch"),
        "val_map": (result.get("val") or {}).get("map"),
        **{key: test.get(key) for key in SUMMARY_KEYS},
        **{key: litter.get(source) for key, source in LITTER_KEYS.items()},
        "per_class": test.get("per_class", {}),
        "per_class_ap50": test.get("per_class_ap50", {}),
    }


def _test_boxes(manifest: dict[str, Any], classes: list[str]) -> dict[str, int | None]:
    """Ground-truth boxes per class over all test folds, from the folds' manifest."""
    per_fold = manifest.get("per_fold") or []
    if not per_fold:
        return dict.fromkeys(classes)
    return {name: sum(int(f["test"]["boxes"].get(name, 0)) for f in per_fold) for name in classes}


def _taco10(summary: dict[str, Any]) -> dict[str, Any]:
    """The TACO paper's table: TACO-1 (litter) and TACO-10 mean AP, then AP per class."""
    mean, std, ci = summary["mean"], summary["std"], summary["ci95"]

    def row(key: str) -> dict[str, Any]:
        return {"mean": mean[key], "std": std[key], "ci95": ci[key]}

    return {
        "reference": "Proença & Simões 2020, TACO: Trash Annotations in Context",
        "taco1": {"map": row("litter_map"), "map50": row("litter_map50")},
        "taco10": {"map": row("map"), "map50": row("map50")},
        "per_class": {
            name: {
                "ap": mean["per_class"][name],
                "ap50": mean["per_class_ap50"][name],
                "test_boxes": summary["test_boxes"][name],
            }
            for name in summary["classes"]
        },
    }


def summarise(out: Path, folds: int) -> dict[str, Any]:
    """Collect every fold's test metrics into cv_summary.json and cv_summary.md."""
    missing = [k for k in range(folds) if not (fold_dir(out, k) / train.METRICS).is_file()]
    if missing:
        raise FileNotFoundError(f"folds {missing} have no {train.METRICS} under {out} yet")
    per_fold = [
        _fold_entry(k, json.loads((fold_dir(out, k) / train.METRICS).read_text()))
        for k in range(folds)
    ]
    manifest_path = out / "folds" / "folds.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    seed = int(manifest.get("seed") or 0)
    classes = list(per_fold[0]["per_class"])
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    ci95: dict[str, Any] = {}
    for key in HEADLINE:
        values = [f[key] for f in per_fold]
        mean[key], std[key] = _mean_std(values)
        ci95[key] = bootstrap_ci(values, seed)
    for table in ("per_class", "per_class_ap50"):
        mean[table], std[table] = {}, {}
        for name in classes:
            mean[table][name], std[table][name] = _mean_std([f[table].get(name) for f in per_fold])
    summary: dict[str, Any] = {
        "folds": folds,
        "seed": manifest.get("seed"),
        "class_set": manifest.get("classes"),
        "classes": classes,
        "test_boxes": _test_boxes(manifest, classes),
        "absent_test_classes": {
            str(f["fold"]): f["test"]["absent_classes"] for f in manifest.get("per_fold", [])
        },
        "per_fold": per_fold,
        "mean": mean,
        "std": std,
        "ci95": ci95,
    }
    if summary["class_set"] == TACO10:
        summary[TACO10] = _taco10(summary)
    write_json(summary, out / SUMMARY, indent=2)
    (out / TABLE).write_text(markdown(summary))
    return summary


def _cell(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if spread is None else f"{value:.3f} ± {spread:.3f}"


def _interval(ci: list[float] | None) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _taco10_lines(table: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"### TACO-1 and TACO-10, in the layout of {table['reference']}",
        "",
        "Mean ± std over folds [95% interval]; AP per TACO-10 class in the table above.",
        "",
        "| | mAP | mAP50 |",
        "|---|---|---|",
    ]
    for name, key in (("TACO-1 (litter)", "taco1"), ("TACO-10", "taco10")):
        cells = [
            f"{_cell(m['mean'], m['std'])} {_interval(m['ci95'])}"
            for m in (table[key]["map"], table[key]["map50"])
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown tables: per fold, per class, and TACO-10 when it applies."""
    keys = list(HEADLINE)
    lines = [
        f"## {summary['folds']}-fold cross-validation (seed {summary['seed']})",
        "",
        "Test-fold COCO box metrics of the checkpoint chosen on each fold's validation split; "
        "`litter_*` merge every class into one. Interval: percentile bootstrap over folds "
        "of the mean, 95%.",
        "",
        "| fold | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for f in summary["per_fold"]:
        lines.append(f"| {f['fold']} | " + " | ".join(_cell(f[k]) for k in keys) + " |")
    mean, std, ci95 = summary["mean"], summary["std"], summary["ci95"]
    lines.append("| mean ± std | " + " | ".join(_cell(mean[k], std[k]) for k in keys) + " |")
    lines.append("| 95% interval | " + " | ".join(_interval(ci95[k]) for k in keys) + " |")
    kind = "TACO-10 class" if TACO10 in summary else "class"
    lines += ["", f"| {kind} | test boxes | AP | AP50 |", "|---|---|---|---|"]
    for name in summary["classes"]:
        boxes = summary["test_boxes"].get(name)
        lines.append(
            f"| {name} | {'n/a' if boxes is None else boxes} | "
            f"{_cell(mean['per_class'][name], std['per_class'][name])} | "
            f"{_cell(mean['per_class_ap50'][name], std['per_class_ap50'][name])} |"
        )
    if TACO10 in summary:
        lines += _taco10_lines(summary[TACO10])
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
