"""Training options beyond the defaults: multi-scale sizes, EMA, cosine schedule, repeat factors."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ml import distributed, recipe
from ml.categories import load_class_set
from ml.cli import ml
from ml.data import GroupedBatchSampler, TacoDataset
from ml.data.coco_file import read_coco
from ml.data.sampler import RepeatFactorSampler, repeat_factors
from ml.engine import train_one_epoch
from ml.train import LAST, TrainOptions
from ml.train import main as train_main
from ml.training_log import LEARNING_CURVE, TrainingLog
from tests.ml.conftest import SMALL


def _options(tmp_path: Path, **kwargs: Any) -> TrainOptions:
    return TrainOptions(annotations=tmp_path, images=tmp_path, out=tmp_path, **kwargs)


# --- multi-scale training -------------------------------------------------------------------


def test_min_size_repeats_and_evaluation_uses_the_largest(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    args = ["--annotations", str(tmp_path / "a.json"), "--images", str(tmp_path)]
    args += ["--out", str(tmp_path / "o"), "--min-size", "800", "--min-size", "640"]
    parsed = TrainOptions(**ml.commands["train"].make_context("train", args).params)
    assert parsed.min_size == (640, 800) and parsed.input_size == (800, 1333)
    assert _options(tmp_path, min_size=512).min_size == (512,)  # one size, as before


def test_each_training_image_reaches_the_model_at_one_of_the_sizes(tmp_path: Path) -> None:
    options = _options(
        tmp_path,
        model="fasterrcnn_mobilenet_v3_large_fpn",
        weights="none",
        min_size=(64, 96),
        max_size=200,
        rpn_proposals=20,
        rois_per_image=8,
    )
    model = recipe.model(options, load_class_set("litter"), torch.device("cpu"))
    heights: list[int] = []

    def seen(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        heights.append(args[0].shape[-2])
        raise _Seen  # what the backbone computes from it does not matter here

    model.backbone.register_forward_pre_hook(seen)
    image = torch.rand(3, 96, 128)  # stored at the largest size, as the training set is
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}
    torch.manual_seed(0)
    for training, inputs in ((True, ([image], [target])), (False, ([image],))):
        model.train(training)
        for _ in range(12 if training else 1):
            with pytest.raises(_Seen):
                model(*inputs)
        if training:
            assert set(heights) == {64, 96}  # padded to multiples of 32: the sizes themselves
            heights.clear()
    assert heights == [96]


class _Seen(Exception):
    """Raised by the hook that saw the backbone's input."""


# --- EMA ------------------------------------------------------------------------------------


class _ToyBN(torch.nn.Module):
    """Loss (w - mean pixel)^2, the pixel means also passing a BatchNorm (running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.norm = torch.nn.BatchNorm1d(1, momentum=1.0)  # running mean = the last batch's

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict:
        x = torch.stack([image.mean() for image in images])
        self.norm(x.view(-1, 1))
        return {"loss": ((self.w - x) ** 2).mean()}


def _batch(value: float) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    images = [torch.full((3, 4, 4), value), torch.full((3, 4, 4), value + 1)]
    return images, [{**target, "image_id": 1}, {**target, "image_id": 2}]


def test_ema_averages_the_weights_and_batchnorm_statistics_each_step(tmp_path: Path) -> None:
    model = _ToyBN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = recipe.ema(_options(tmp_path, ema=0.5), model)
    assert ema is not None and recipe.ema(_options(tmp_path), model) is None
    raw_w, raw_mean, avg_w, avg_mean = [], [], 0.0, 0.0
    for step, value in enumerate((1.0, 3.0, 5.0)):
        train_one_epoch(
            model, optimizer, [_batch(value)], torch.device("cpu"), epoch=0, ema=ema, progress=False
        )
        w, mean = model.w.item(), model.norm.running_mean.item()
        raw_w.append(w)
        raw_mean.append(mean)
        # The first update copies; each later one moves halfway (decay 0.5) to the weights.
        avg_w = w if step == 0 else 0.5 * avg_w + 0.5 * w
        avg_mean = mean if step == 0 else 0.5 * avg_mean + 0.5 * mean
    assert ema.module.w.item() == pytest.approx(avg_w)
    assert ema.module.norm.running_mean.item() == pytest.approx(avg_mean)
    assert avg_w != pytest.approx(raw_w[-1]) and avg_mean != pytest.approx(raw_mean[-1])


# --- cosine schedule ------------------------------------------------------------------------


def test_cosine_warms_up_linearly_then_decays_to_the_floor(tmp_path: Path) -> None:
    options = _options(tmp_path, schedule="cosine", lr=0.1, warmup_iters=10, lr_floor=0.01)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=options.lr)
    schedule = recipe.cosine(options, optimizer, total_steps=110)
    assert schedule is not None and recipe.warmup(options, optimizer, 0) is None
    rates = []
    for _ in range(200):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1 * 0.001)
    assert rates[5] == pytest.approx(0.1 * 0.501)
    assert rates[10] == pytest.approx(0.1)
    assert rates[60] == pytest.approx(0.1 * (0.01 + 0.99 * 0.5))  # half-way down the cosine
    assert rates[110] == rates[199] == pytest.approx(0.001)  # the floor, and it stays there
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))

    # Resumed at step 40: the same rates from there on.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=options.lr)
    schedule = recipe.cosine(options, optimizer, total_steps=110)
    assert schedule is not None
    for _ in range(40):
        optimizer.step()
        schedule.step()
    saved_opt, saved = optimizer.state_dict(), schedule.state_dict()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=options.lr)
    resumed = recipe.cosine(options, optimizer, total_steps=110)
    assert resumed is not None
    optimizer.load_state_dict(saved_opt)
    resumed.load_state_dict(saved)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rates[40])
    optimizer.step()
    resumed.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(rates[41])


def test_the_plateau_schedule_has_no_cosine(tmp_path: Path) -> None:
    options = _options(tmp_path, warmup_iters=5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert recipe.cosine(options, optimizer, 100) is None
    assert recipe.warmup(options, optimizer, 0) is not None


# --- repeat-factor sampling -----------------------------------------------------------------

# 10 images: 8 hold class 1, 2 of them class 2 as well, 1 holds only class 3, 1 is empty.
LABELS: list[set[int]] = [{1}] * 6 + [{1, 2}] * 2 + [{3}, set()]


def test_repeat_factors_follow_the_lvis_rule() -> None:
    factors = repeat_factors(LABELS, 0.5)
    # f(1) = 0.8: r = 1; f(2) = 0.2: r = sqrt(2.5); f(3) = 0.1: r = sqrt(5); empty: 1.
    expected = [1.0] * 6 + [math.sqrt(2.5)] * 2 + [math.sqrt(5.0), 1.0]
    assert factors == pytest.approx(expected)
    assert repeat_factors(LABELS, 0.05) == [1.0] * 10  # no class below the threshold
    with pytest.raises(ValueError, match="repeat threshold"):
        repeat_factors(LABELS, 0.0)


def test_repeat_sampler_rounds_stochastically_and_is_a_function_of_seed_and_epoch() -> None:
    factors = repeat_factors(LABELS, 0.5)
    sampler = RepeatFactorSampler(factors, seed=3)
    counts = []
    for epoch in range(200):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(sampler) and sorted(set(order)) == list(range(10))
        counts.append([order.count(i) for i in range(10)])
        assert all(n == 1 for n in counts[-1][:6]) and counts[-1][9] == 1
        assert counts[-1][8] in (2, 3) and counts[-1][6] in (1, 2)
    mean = [sum(c[i] for c in counts) / len(counts) for i in range(10)]
    assert mean[8] == pytest.approx(math.sqrt(5), abs=0.1)
    assert mean[6] == pytest.approx(math.sqrt(2.5), abs=0.1)
    # A resumed run (a fresh sampler) draws epoch 7 exactly as the uninterrupted one did.
    again = RepeatFactorSampler(factors, seed=3)
    again.set_epoch(7)
    sampler.set_epoch(7)
    assert list(again) == list(sampler)
    sampler.set_epoch(8)
    assert list(again) != list(sampler)


def test_repeat_sampler_shards_one_epoch_across_ranks_in_aspect_groups() -> None:
    factors = repeat_factors(LABELS, 0.5)
    ranks = [RepeatFactorSampler(factors, 2, rank, seed=1) for rank in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(4)
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == len(ranks[0])
    drawn_by_both, epoch = Counter(shards[0] + shards[1]), Counter(ranks[0].indices)
    assert not epoch - drawn_by_both  # every repeat is drawn by one rank or the other
    assert (drawn_by_both - epoch).total() == len(ranks[0].indices) % 2  # padding to even
    groups = [0, 1] * 5  # alternate aspect groups
    batches = GroupedBatchSampler(ranks[0], groups, 2, equal_length=True)
    drawn = list(batches)  # type: ignore[arg-type]
    assert len(drawn) == len(batches) == math.ceil(len(ranks[0]) / 2)
    assert all(len({groups[i] for i in batch}) == 1 for batch in drawn)
    single = GroupedBatchSampler(RepeatFactorSampler(factors, seed=1), groups, 2)
    assert len(single) == len(list(single))  # counted on the repeated epoch, not on 10 images


def test_the_training_loader_repeats_rare_images_when_asked(shapes: Path, tmp_path: Path) -> None:
    data = read_coco(shapes / "annotations.json")
    dataset = TacoDataset(data, shapes, load_class_set("all", data["categories"]))
    ctx = distributed.Context()
    plain = recipe.loader(dataset, _options(tmp_path, workers=0, batch_size=2), ctx, train=True)
    options = _options(tmp_path, workers=0, batch_size=2, repeat_threshold=0.9)
    loader = recipe.loader(dataset, options, ctx, train=True)
    sampler = loader.batch_sampler.sampler  # type: ignore[union-attr]
    assert isinstance(sampler, RepeatFactorSampler)
    recipe.start_epoch(loader, 5, options.seed)
    assert sampler.epoch == 5 and len(sampler) > len(dataset)
    steps = recipe.optimizer_steps(loader, 3, 1)
    assert steps == sum(_epoch_batches(loader, e) for e in range(3)) > 3 * len(plain)


def _epoch_batches(loader: torch.utils.data.DataLoader, epoch: int) -> int:
    recipe.start_epoch(loader, epoch, 0)
    return len(list(loader.batch_sampler))  # type: ignore[arg-type]


# --- learning curve -------------------------------------------------------------------------


def test_the_log_draws_its_learning_curve(tmp_path: Path) -> None:
    log = TrainingLog(tmp_path, tensorboard=False)
    for epoch in range(3):
        log.epoch(epoch, {"train/loss": 1.0 / (epoch + 1), "train/lr": 0.01, "val/map": None})
    log.epoch(3, {"train/loss": 0.2, "train/lr": 0.001, "val/map": 0.3, "val/map50": 0.5})
    log.close()
    with Image.open(tmp_path / LEARNING_CURVE) as png:
        assert png.format == "PNG" and png.width > 300
    (tmp_path / LEARNING_CURVE).unlink()
    drawn = CliRunner().invoke(ml, ["plot-log", str(tmp_path)])  # a run's folder, later
    assert drawn.exit_code == 0 and (tmp_path / LEARNING_CURVE).is_file(), drawn.output
    (tmp_path / "empty").mkdir()
    missing = CliRunner().invoke(ml, ["plot-log", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "no epoch" in missing.output


# --- all together, through `train` -----------------------------------------------------------


@pytest.mark.slow
def test_a_run_with_every_option_saves_the_average(shapes: Path, tmp_path: Path) -> None:
    """Multi-scale, EMA, cosine and repeat factors in one short run (one epoch).

    The one check that `train` validates and saves the average (about 20 s on 2 cores).
    """
    options = TrainOptions(
        annotations=shapes / "annotations.json",
        images=shapes,
        out=tmp_path,
        classes="all",
        epochs=1,
        batch_size=4,
        val_fraction=0.2,
        val_images=0,
        **{
            **SMALL,
            "min_size": (48, 64),
            "max_size": 86,
            "rois_per_image": 16,
            "tensorboard": False,
            "precise_bn": 0,
            "warmup_iters": 2,
            "ema": 0.9,
            "schedule": "cosine",
            "repeat_threshold": 0.3,
        },
    )
    train_main(options)
    last = torch.load(tmp_path / LAST, weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert last["min_size"] == 64 and list(last["options"]["min_size"]) == [48, 64]
    averaged, trained = last["state_dict"], last["train_state_dict"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in trained)
    assert all(torch.equal(best["state_dict"][k], averaged[k]) for k in averaged)  # the average
    assert last["ema_updates"] == last["global_step"] == last["lr_schedule"]["last_epoch"] > 0
    with open(tmp_path / "log.csv", newline="") as fh:
        (row,) = csv.DictReader(fh)
    assert float(row["train/lr"]) == pytest.approx(0.02 * 0.01)  # the cosine's floor at the end
    assert (tmp_path / LEARNING_CURVE).is_file()


def test_resume_restores_the_average_and_the_schedule(tmp_path: Path) -> None:
    options = _options(tmp_path, ema=0.5, schedule="cosine", warmup_iters=2, lr=0.1)

    def run() -> tuple[_ToyBN, Any, Any, torch.optim.Optimizer]:
        model = _ToyBN()
        optimizer = torch.optim.SGD(model.parameters(), lr=options.lr)
        return model, recipe.ema(options, model), recipe.cosine(options, optimizer, 10), optimizer

    def step(parts: tuple[_ToyBN, Any, Any, torch.optim.Optimizer], value: float) -> None:
        model, ema, schedule, optimizer = parts
        cpu = torch.device("cpu")
        kwargs = {"schedule": schedule, "ema": ema, "progress": False}
        train_one_epoch(model, optimizer, [_batch(value)], cpu, epoch=0, **kwargs)

    straight = run()
    for value in (1.0, 3.0, 5.0):
        step(straight, value)
    model, ema, schedule, optimizer = straight
    # What last.pt holds: the average as the served weights, plus the resume state.
    saved = {"state_dict": ema.module.state_dict(), **recipe.resume_state(model, ema, schedule)}
    resumed = run()
    resumed[3].load_state_dict(optimizer.state_dict())
    recipe.load_resume_state(saved, resumed[0], resumed[1], resumed[2])
    assert resumed[0].w.item() == model.w.item() != ema.module.w.item()
    assert resumed[1].module.w.item() == ema.module.w.item()
    assert int(resumed[1].n_averaged) == 3 and resumed[2].last_epoch == 3
    step(straight, 7.0)
    step(resumed, 7.0)  # the next step moves both alike
    assert resumed[1].module.w.item() == pytest.approx(ema.module.w.item())
    assert resumed[3].param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
