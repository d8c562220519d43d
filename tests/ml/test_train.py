"""Training learns, keeps its promises about checkpoints, and stops on a non-finite loss."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from ml import distributed, recipe
from ml.categories import load_class_set
from ml.data import TacoDataset, collate
from ml.detector import Detector, read_checkpoint, save_checkpoint
from ml.engine import NonFiniteLossError, evaluate
from ml.evaluate import EvaluateOptions
from ml.evaluate import main as evaluate_main
from ml.train import BEST, LAST, METRICS, TrainOptions, TrainResult
from ml.train import main as train_main
from ml.transforms import eval_transforms
from tests.ml.conftest import SMALL


def _untrained_checkpoint(options: TrainOptions, path: Path) -> Path:
    data = json.loads(options.annotations.read_text())
    class_set = load_class_set(options.classes, data["categories"])
    recipe.seed_everything(options.seed)
    model = recipe.model(options, class_set, torch.device("cpu"))
    info = recipe.model_info(options, class_set, {})
    return save_checkpoint(path, model, info, class_set=class_set.to_dict())


@pytest.mark.slow
def test_training_raises_map50_well_above_the_untrained_model(
    trained: tuple[TrainOptions, TrainResult], tmp_path: Path
) -> None:
    options, result = trained
    untrained = evaluate_main(
        EvaluateOptions(
            weights=_untrained_checkpoint(options, tmp_path / "untrained.pt"),
            annotations=options.test_annotations,
            images=options.images,
            device="cpu",
            workers=0,
            progress=False,
        )
    )
    assert result.test_metrics is not None
    assert untrained["images"] == result.test_metrics["images"] == 24
    assert untrained["map50"] < 0.05
    # Other seeds and thread timings give 0.4-0.85; 0.25 is still 50x the untrained score.
    assert result.test_metrics["map50"] > 0.25
    assert result.test_metrics["map50"] > untrained["map50"] + 0.2
    # The same number again, through `evaluate` on the saved checkpoint.
    again = evaluate_main(
        EvaluateOptions(
            weights=result.checkpoint,
            annotations=options.test_annotations,
            images=options.images,
            device="cpu",
            workers=0,
            progress=False,
        )
    )
    assert again["map50"] == pytest.approx(result.test_metrics["map50"], abs=1e-6)


def test_run_folder_and_self_describing_checkpoint(
    trained: tuple[TrainOptions, TrainResult],
) -> None:
    options, result = trained
    out = options.out
    assert result.checkpoint == out / BEST and (out / LAST).is_file()
    info, payload = read_checkpoint(out / BEST)
    assert info.arch == SMALL["model"] and info.class_names == ("litter",)
    assert (info.min_size, info.max_size) == (144, 192)
    # The workers' threshold is the one with the best F1 on the validation split.
    chosen = info.metrics["val"]["best_f1"]
    assert 0 < chosen["f1"] <= 1 and info.score_threshold == pytest.approx(chosen["threshold"])
    assert payload["score_threshold_source"] == "best F1 at IoU 0.5 on the validation split"
    assert info.version == options.version or len(info.version) == 14  # UTC start time
    assert info.metrics["best_epoch"] == result.best_epoch
    assert info.metrics["val"]["map"] == result.val_metrics["map"]
    assert info.metrics["test"]["map50"] == result.test_metrics["map50"]
    assert payload["class_set"]["name"] == "litter"
    summary = json.loads((out / METRICS).read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["test"] == result.test_metrics
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(12))
    assert all(float(r["perf/images_per_s"]) > 0 for r in rows)
    # The kept epoch is the best on validation, which is never the test split.
    val_maps = [float(r["val/map"] or 0) for r in rows]
    assert val_maps[result.best_epoch] == max(val_maps)
    assert len(list((out / "val_images" / "epoch_000").glob("*.jpg"))) == 2
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert result.images_per_s > 0 and result.peak_memory_bytes > 100 * 2**20


def test_checkpoint_predicts_in_the_worker_detector_as_in_evaluation(
    trained: tuple[TrainOptions, TrainResult],
) -> None:
    """The worker's Detector on whole photos finds what evaluation scored, box for box."""
    options, result = trained
    detector = Detector.from_checkpoint(result.checkpoint, "cpu")
    test_set = TacoDataset(
        options.test_annotations,
        options.images,
        load_class_set("litter"),
        eval_transforms(144, 192),
    )
    images = [test_set.load_image(i) for i in range(6)]
    # One photo per call, as the workers' shape-grouped batches pad nothing either.
    found = [detector.predict([image], score_threshold=0.05)[0] for image in images]
    assert sum(len(f) for f in found) > 0
    # The evaluation side: the dataset's resize, the same weights, boxes mapped back.
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(test_set, range(6)), batch_size=1, collate_fn=collate
    )
    expected = evaluate(detector.model, loader, torch.device("cpu"), progress=False)
    for dets, out in zip(found, expected, strict=True):
        assert [d.label for d in dets] == ["litter"] * len(out["boxes"])
        assert torch.allclose(
            torch.tensor([d.box for d in dets]).reshape(-1, 4),
            torch.tensor(out["boxes"]).reshape(-1, 4),
            atol=1e-3,
        )
        assert torch.allclose(
            torch.tensor([d.score for d in dets]), torch.tensor(out["scores"]), atol=1e-5
        )


def test_evaluation_maps_boxes_back_to_annotation_pixels(
    trained: tuple[TrainOptions, TrainResult], tmp_path: Path
) -> None:
    """The same photos at twice the size score the same: boxes are scaled back before COCOeval."""
    options, result = trained
    data = json.loads(options.test_annotations.read_text())
    for image in data["images"]:
        with Image.open(options.images / image["file_name"]) as photo:
            big = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.BICUBIC)
        (tmp_path / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        big.save(tmp_path / image["file_name"], quality=95)
        image["width"], image["height"] = big.size
    for ann in data["annotations"]:
        ann["bbox"] = [2 * v for v in ann["bbox"]]
        ann["area"] *= 4
    (tmp_path / "big.json").write_text(json.dumps(data))
    dataset = TacoDataset(
        tmp_path / "big.json", tmp_path, load_class_set("litter"), eval_transforms(144, 192)
    )
    image, target = dataset[0]
    assert image.shape[-2] * 2 == target["orig_size"][0]  # evaluated at half the size
    big = evaluate_main(
        EvaluateOptions(
            weights=result.checkpoint,
            annotations=tmp_path / "big.json",
            images=tmp_path,
            device="cpu",
            workers=0,
            progress=False,
        )
    )
    assert big["map50"] > 0.25
    assert big["map50"] == pytest.approx(result.test_metrics["map50"], abs=0.1)


def test_resume_continues_after_the_last_epoch(shapes: Path, tmp_path: Path) -> None:
    base = TrainOptions(
        annotations=shapes / "annotations.json",
        images=shapes,
        out=tmp_path,
        classes="all",
        epochs=1,
        batch_size=4,
        val_fraction=0.2,
        val_images=0,
        **{**SMALL, "min_size": 64, "max_size": 86, "rois_per_image": 16, "tensorboard": False},
    )
    first = train_main(base)
    after_first = torch.load(tmp_path / LAST, weights_only=True)
    assert after_first["epoch"] == 0
    second = train_main(dataclasses.replace(base, epochs=2, resume=True))
    last = torch.load(tmp_path / LAST, weights_only=True)
    assert last["epoch"] == 1 and "optimizer" in last and "plateau" in last
    assert last["version"] == after_first["version"]  # still the same run
    with open(tmp_path / "log.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1]
    assert second.best_epoch in (0, 1) and first.best_epoch == 0


def test_a_non_finite_loss_stops_the_run(shapes: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        annotations=shapes / "annotations.json",
        images=shapes,
        out=tmp_path,
        classes="all",
        epochs=1,
        batch_size=1,
        momentum=0.0,
        weight_decay=0.0,
        val_fraction=0.2,
        val_images=0,
        **{
            **SMALL,
            "lr": 1e12,
            "warmup_iters": 0,
            "min_size": 64,
            "max_size": 86,
            "rois_per_image": 16,
            "tensorboard": False,
        },
    )
    with pytest.raises(NonFiniteLossError, match="loss is (nan|inf)"):
        train_main(options)
    assert not (tmp_path / BEST).exists()


def test_evaluation_results_do_not_depend_on_the_batch_size(
    trained: tuple[TrainOptions, TrainResult],
) -> None:
    """Portrait and landscape photos alternate: a batch of 4 must not pad one to the other."""
    options, result = trained
    test_set = TacoDataset(
        options.test_annotations,
        options.images,
        load_class_set("litter"),
        eval_transforms(144, 192),
    )
    model = Detector.from_checkpoint(result.checkpoint, "cpu").model
    found = {}
    for batch_size in (1, 4):
        loader = recipe.loader(
            test_set,
            dataclasses.replace(options, batch_size=batch_size),
            distributed.Context(),
            train=False,
        )
        found[batch_size] = {
            d["image_id"]: d for d in evaluate(model, loader, torch.device("cpu"), progress=False)
        }
    assert found[1].keys() == found[4].keys() == {r.image_id for r in test_set.records}
    assert sum(len(d["boxes"]) for d in found[1].values()) > 0
    for image_id, one in found[1].items():
        four = found[4][image_id]
        assert len(one["boxes"]) == len(four["boxes"]), image_id
        assert torch.allclose(
            torch.tensor(one["boxes"]).reshape(-1, 4),
            torch.tensor(four["boxes"]).reshape(-1, 4),
            atol=1e-2,
        )
        assert torch.allclose(torch.tensor(one["scores"]), torch.tensor(four["scores"]), atol=1e-4)


def test_sliced_evaluation_with_one_tile_per_photo_scores_as_the_whole_photo(
    trained: tuple[TrainOptions, TrainResult],
) -> None:
    """The tile path (full-size photo, worker preprocessing, NMS merge) against the plain one."""
    options, result = trained
    common = {
        "weights": result.checkpoint,
        "annotations": options.test_annotations,
        "images": options.images,
        "device": "cpu",
        "workers": 0,
        "progress": False,
    }
    whole = evaluate_main(EvaluateOptions(**common))
    sliced = evaluate_main(EvaluateOptions(**common, slice_size=4096))
    assert whole["slice"]["size"] == 0 and sliced["slice"]["size"] == 4096
    assert sliced["map50"] == pytest.approx(whole["map50"], abs=0.02)
    assert sliced["map"] == pytest.approx(whole["map"], abs=0.02)
