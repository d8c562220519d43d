"""`trashmap ml bootstrap`: from nothing to an active model, one resumable command.

Stages run in order; each is recorded in OUT/bootstrap_state.json once it has finished, and a
rerun skips what is recorded (an interrupted stage resumes: downloads continue, finished folds
are kept, a training run continues from its last epoch):

1. download: the annotation file and its images (`ml.download`, verified),
2. cv: K-fold cross-validation (`ml.cross_validate`) -> cv/cv_summary.json,
3. final: one model on every image with the same recipe (`ml.train`) -> final/best.pt,
4. card: that model's card, with the cross-validation added, in OUT,
5. register: the checkpoint registered as a model version and made active, with that card.

ml/ imports neither web nor worker, so registering runs the operator's own
`trashmap models register --activate` as a child process: the checkpoint is read and stored
exactly as that command does it; the registry is then read back through trashmap's core.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml import cross_validate, model_card, train
from ml.coco_eval import SUMMARY_KEYS
from ml.data.coco_file import read_coco, subset, write_json
from ml.detector import file_sha256, read_checkpoint
from ml.download import REPORT, DownloadOptions, fetch_with_retries
from ml.download import main as download_images
from ml.train import TrainOptions
from ml.train_options import FLAGS

logger = logging.getLogger(__name__)

STATE = "bootstrap_state.json"
SUMMARY = "bootstrap_summary.json"
ANNOTATIONS = "annotations.json"
# The annotation file restricted to the images that downloaded, with --allow-missing.
AVAILABLE = "annotations_available.json"
IMAGES = "images"
CV_DIR = "cv"
FINAL_DIR = "final"
STAGES = ("download", "cv", "final", "card", "register")

# Settings that change only speed or what is shown: a rerun may change them freely.
_FREE = frozenset({"progress", "workers", "threads", "device", "tensorboard", "val_images", "amp"})

Report = Callable[[str], None]


class BootstrapError(ValueError):
    """A stage cannot finish; the message says what to fix before rerunning."""


@dataclass(frozen=True)
class BootstrapOptions:
    """Where everything goes, where the data comes from, and what the stages may skip."""

    out: Path
    annotations_url: str
    folds: int = 5
    url_field: str = "flickr_url"
    download_workers: int = 8
    download_retries: int = 4
    timeout: float = 60.0
    allow_missing: bool = False
    register: bool = True


def _recipe(boot: BootstrapOptions, options: TrainOptions) -> dict[str, Any]:
    """The settings finished stages depend on: a rerun must keep them."""
    trained = {
        k: v
        for k, v in options.to_dict().items()
        if k not in _FREE and k != "resume" and not FLAGS[k].per_fold
    }
    recipe = {
        "annotations_url": boot.annotations_url,
        "url_field": boot.url_field,
        "folds": boot.folds,
        "allow_missing": boot.allow_missing,
        "train": trained,
    }
    return json.loads(json.dumps(recipe))  # as the state file holds it (tuples as lists)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} {a!r} -> {b!r}")
    return found


def load_state(boot: BootstrapOptions, options: TrainOptions) -> dict[str, Any]:
    """OUT's state, new or as a previous run left it; refuses a run with another recipe."""
    recipe = _recipe(boot, options)
    path = boot.out / STATE
    if not path.is_file():
        return {"recipe": recipe, "stages": {}}
    state = json.loads(path.read_text())
    changed = _differences(state["recipe"], recipe)
    if changed and state["stages"]:
        raise BootstrapError(
            f"{boot.out} was started with other settings ({'; '.join(changed)}); rerun with "
            "the same ones to resume, or use another --out"
        )
    return {"recipe": recipe, "stages": state["stages"]}


def _download(boot: BootstrapOptions, options: TrainOptions, report: Report) -> dict[str, Any]:
    """Fetch the annotation file (once, checked as COCO) and every image it lists."""
    annotations = boot.out / ANNOTATIONS
    download = DownloadOptions(
        annotations,
        boot.out / IMAGES,
        url_field=boot.url_field,
        workers=boot.download_workers,
        retries=boot.download_retries,
        timeout=boot.timeout,
        progress=options.progress,
    )
    if not annotations.is_file():
        report(f"      annotations: {boot.annotations_url}")
        part = annotations.with_name(annotations.name + ".part")
        _, failure = fetch_with_retries(boot.annotations_url, part, download)
        if failure is not None:
            raise BootstrapError(f"annotation file {boot.annotations_url}: {failure}")
        try:
            read_coco(part)
        except ValueError as exc:
            part.unlink()  # not COCO (an error page?): fetch it whole next time
            raise BootstrapError(
                f"{boot.annotations_url} is not a usable COCO file: {exc}"
            ) from None
        part.replace(annotations)
    outcome = download_images(download)
    failed = len(outcome["failed"])
    data = annotations
    if failed and not boot.allow_missing:
        raise BootstrapError(
            f"{failed} of {outcome['images']} images did not download (details in "
            f"{download.out / REPORT}); rerun to retry them, or pass --allow-missing to go on "
            "without them"
        )
    if failed:
        missing = {f["file_name"] for f in outcome["failed"]}
        coco = read_coco(annotations)
        kept = [image["id"] for image in coco["images"] if image["file_name"] not in missing]
        data = write_json(subset(coco, kept), boot.out / AVAILABLE)
        report(f"      going on without {failed} images: {data}")
    return {
        "annotations": str(data),
        "annotations_sha256": file_sha256(annotations),
        "images": outcome["images"] - failed,
        "failed": failed,
    }


def _data(boot: BootstrapOptions, state: dict[str, Any]) -> tuple[Path, Path]:
    """The annotation file the download stage settled on, and the image folder."""
    return Path(state["stages"]["download"]["annotations"]), boot.out / IMAGES


def _resuming(options: TrainOptions, run: Path) -> TrainOptions:
    """`options`, continuing the training run in `run` when an earlier one left its last epoch."""
    return dataclasses.replace(options, resume=(run / train.LAST).is_file())


def _mean_std(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        key: {"mean": summary["mean"].get(key), "std": summary["std"].get(key)}
        for key in SUMMARY_KEYS
    }


def _cv(
    boot: BootstrapOptions, options: TrainOptions, state: dict[str, Any], report: Report
) -> dict[str, Any]:
    """Every fold not finished yet (an interrupted one resumes), then the summary."""
    annotations, images = _data(boot, state)
    cv = cross_validate.CVOptions(annotations, images, boot.out / CV_DIR, boot.folds)
    cross_validate.prepare(cv, options)
    for k in range(boot.folds):
        run = cross_validate.fold_dir(cv.out, k)
        if (run / train.METRICS).is_file():
            report(f"      fold {k + 1}/{boot.folds}: finished earlier, kept")
            continue
        report(f"      fold {k + 1}/{boot.folds}")
        cross_validate.run_fold(k, cv, _resuming(options, run))
    summary = cross_validate.summarise(cv.out, boot.folds)
    return {"summary": str(cv.out / cross_validate.SUMMARY), "metrics": _mean_std(summary)}


def _final(boot: BootstrapOptions, options: TrainOptions, state: dict[str, Any]) -> dict[str, Any]:
    """All images, the folds' recipe: the same epochs, with the epoch kept and the score
    threshold chosen on a --val-fraction inner split, as each fold chose its own."""
    annotations, images = _data(boot, state)
    final = dataclasses.replace(
        _resuming(options, boot.out / FINAL_DIR),
        annotations=annotations,
        images=images,
        out=boot.out / FINAL_DIR,
        val_annotations=None,
        test_annotations=None,
    )
    result = train.main(final)
    metrics = json.loads((final.out / train.METRICS).read_text())
    return {
        "checkpoint": str(result.checkpoint.resolve()),
        "best_epoch": result.best_epoch,
        "val": {key: result.val_metrics.get(key) for key in SUMMARY_KEYS},
        "score_threshold": metrics.get("score_threshold"),
    }


def _card(boot: BootstrapOptions, state: dict[str, Any], report: Report) -> dict[str, Any]:
    """The final model's card in OUT, with the recipe's cross-validation added.

    The final model has no test split (every image trains or picks its epoch), so the
    folds' held-out scores are the estimate of how the recipe does on unseen photos.
    """
    source = Path(state["stages"]["final"]["checkpoint"]).parent / model_card.CARD_JSON
    if not source.is_file():
        report(f"      no model card at {source}")
        return {"files": []}
    cv_folder = Path(state["stages"]["cv"]["summary"]).parent
    cv = json.loads((cv_folder / cross_validate.SUMMARY).read_text())
    card = json.loads(source.read_text())
    card["cross_validation"] = {
        "summary": str(cv_folder / cross_validate.SUMMARY),
        **{key: cv.get(key) for key in ("folds", "seed", "mean", "std", "ci95")},
    }
    folds = cv.get("folds")
    card["limits"] = [
        f"No test split: the {folds}-fold cross-validation below (the same recipe, held-out "
        "folds) is the estimate for unseen photos; the metrics above are the validation "
        "split's, which chose the epoch and the threshold."
        if limit == model_card.NO_TEST_SPLIT
        else limit
        for limit in card["limits"]
    ]
    json_path = write_json(card, boot.out / model_card.CARD_JSON, indent=2)
    md_path = boot.out / model_card.CARD_MD
    table = (cv_folder / cross_validate.TABLE).read_text()
    md_path.write_text(model_card.render_markdown(card).rstrip("\n") + "\n\n" + table)
    return {"files": [str(md_path), str(json_path)]}


def database_problem() -> str | None:
    """Why registering would fail now (settings, reachability, migrations), or None."""
    from trashmap.migrate import NotMigrated, require_migrated
    from trashmap.settings import Settings, SettingsError

    try:
        require_migrated(Settings.from_env())
    except (NotMigrated, SettingsError) as exc:
        return str(exc)
    return None


def _register(boot: BootstrapOptions, state: dict[str, Any], report: Report) -> dict[str, Any]:
    """`trashmap models register CHECKPOINT --activate`; then the card in OUT (the
    checkpoint's, plus the cross-validation) replaces the checkpoint's own on the row."""
    from trashmap.db import make_engine, make_session_factory
    from trashmap.settings import Settings
    from trashmap.versions import find_version

    checkpoint = Path(state["stages"]["final"]["checkpoint"])
    command = [sys.executable, "-m", "trashmap", "models", "register", str(checkpoint)]
    done = subprocess.run([*command, "--activate"], capture_output=True, text=True)
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        why = why.removeprefix("Error: ")  # click's prefix; ours follows
        raise BootstrapError(
            f"registering {checkpoint} failed: {why}. Fix it and rerun (the finished stages "
            "are kept), or register later: trashmap models register CHECKPOINT --activate"
        )
    report(f"      {done.stdout.strip()}")
    info, _ = read_checkpoint(checkpoint)
    engine = make_engine(Settings.from_env())
    try:
        with make_session_factory(engine)() as session:
            row = find_version(session, f"{info.name}:{info.version}")
            card = boot.out / model_card.CARD_JSON
            if card.is_file():
                row.card = json.loads(card.read_text())
                session.commit()
            return {"id": row.id, "label": row.label, "active": row.active}
    finally:
        engine.dispose()


def _summary(boot: BootstrapOptions, state: dict[str, Any]) -> dict[str, Any]:
    """What the run produced, with the model card when there is one."""
    card_json = boot.out / model_card.CARD_JSON
    return {
        "out": str(boot.out),
        "annotations_url": boot.annotations_url,
        **{stage: state["stages"].get(stage) for stage in STAGES},
        "model_card": json.loads(card_json.read_text()) if card_json.is_file() else None,
    }


def main(boot: BootstrapOptions, options: TrainOptions, report: Report = print) -> dict[str, Any]:
    """Run every stage not finished yet; write and return OUT/bootstrap_summary.json.

    `options` is the training recipe of every fold and of the final model; its data fields
    are placeholders that each stage fills in.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise BootstrapError(
            "bootstrap runs as one process; for several GPUs run `trashmap ml cv --fold K` "
            "side by side"
        )
    boot.out.mkdir(parents=True, exist_ok=True)
    state = load_state(boot, options)
    write_json(state, boot.out / STATE, indent=2)
    problem = database_problem() if boot.register and "register" not in state["stages"] else None
    if problem:
        report(
            f"database: {problem}. Training goes ahead; the register stage fails until "
            "this is fixed (then rerun: finished stages are kept), or pass --no-register"
        )
    stages: dict[str, Callable[[], dict[str, Any]]] = {
        "download": lambda: _download(boot, options, report),
        "cv": lambda: _cv(boot, options, state, report),
        "final": lambda: _final(boot, options, state),
        "card": lambda: _card(boot, state, report),
        "register": lambda: _register(boot, state, report),
    }
    for number, (stage, run) in enumerate(stages.items(), 1):
        prefix = f"[{number}/{len(stages)}] {stage}"
        if stage in state["stages"]:
            report(f"{prefix}: finished {state['stages'][stage]['finished']}, skipped")
            continue
        if stage == "register" and not boot.register:
            report(f"{prefix}: skipped (--no-register)")
            continue
        report(f"{prefix}: started")
        started = time.monotonic()
        result = run()
        seconds = round(time.monotonic() - started, 1)
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        state["stages"][stage] = {**result, "finished": finished, "seconds": seconds}
        write_json(state, boot.out / STATE, indent=2)
        report(f"{prefix}: done in {seconds:.0f} s")
    summary = _summary(boot, state)
    write_json(summary, boot.out / SUMMARY, indent=2)
    return summary
