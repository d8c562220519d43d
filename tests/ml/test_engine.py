"""The training loop's arithmetic: accumulation, epoch order on resume, DDP stops, plateau."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import torch

from ml import distributed, recipe
from ml.categories import load_class_set
from ml.data import TacoDataset
from ml.data.coco_file import read_coco
from ml.engine import NonFiniteLossError, train_one_epoch
from ml.train import TrainOptions


class _Toy(torch.nn.Module):
    """Loss (w - mean pixel)^2: each batch's gradient is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict:
        x = torch.stack([image.mean() for image in images])
        return {"loss": ((self.w - x) ** 2).mean()}


def _batch(value: float, image_id: int = 1) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    return [torch.full((3, 4, 4), value)], [{**target, "image_id": image_id}]


def test_a_short_last_accumulation_group_steps_with_its_full_mean_gradient() -> None:
    model = _Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    a, b, c = 1.0, 2.0, 4.0
    train_one_epoch(
        model,
        optimizer,
        [_batch(a), _batch(b), _batch(c)],
        torch.device("cpu"),
        epoch=0,
        accumulate=2,
        progress=False,
    )
    w1 = 0.1 * (a + b)  # the mean of the first two gradients, -2a and -2b
    w2 = w1 - 0.1 * 2 * (w1 - c)  # the third batch alone, at full weight
    assert model.w.item() == pytest.approx(w2)


def _rank(rank: int, init_file: str, results: Any) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    model = torch.nn.parallel.DistributedDataParallel(_Toy())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [_batch(1.0), _batch(float("nan") if rank == 1 else 1.0, image_id=7), _batch(1.0)]
    try:
        train_one_epoch(model, optimizer, batches, torch.device("cpu"), epoch=0, progress=False)
        results.put((rank, "finished"))
    except NonFiniteLossError as exc:
        results.put((rank, str(exc)))
    finally:
        torch.distributed.destroy_process_group()


def test_a_nan_on_one_ddp_rank_stops_every_rank(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    procs = [
        context.Process(target=_rank, args=(r, str(tmp_path / "init"), results)) for r in (0, 1)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
    assert not hung, "a rank waits forever for the one whose loss is NaN"
    outcome = dict(results.get(timeout=5) for _ in procs)
    assert "loss is nan" in outcome[1] and "[7]" in outcome[1]
    assert "another process" in outcome[0]


def test_a_resumed_run_continues_with_the_next_epochs_order(shapes: Path, tmp_path: Path) -> None:
    options = TrainOptions(
        annotations=shapes / "annotations.json",
        images=shapes,
        out=tmp_path,
        classes="all",
        batch_size=2,
        workers=0,
        seed=5,
    )
    data = read_coco(options.annotations)
    dataset = TacoDataset(data, shapes, load_class_set("all", data["categories"]))
    ctx = distributed.Context()

    def epoch(loader: torch.utils.data.DataLoader, k: int) -> tuple[list, float]:
        recipe.start_epoch(loader, k, options.seed)
        assert len(loader) > 0  # counting batches draws nothing
        return list(loader.batch_sampler), torch.rand(1).item()  # type: ignore[arg-type]

    straight = recipe.loader(dataset, options, ctx, train=True)
    first, second = epoch(straight, 0), epoch(straight, 1)
    resumed = recipe.loader(dataset, options, ctx, train=True)
    assert epoch(resumed, 1) == second
    assert first[0] != second[0] and first[1] != second[1]


def test_the_plateau_counts_only_once_learning_has_started() -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.02)
    plateau = recipe.Plateau(optimizer, factor=0.1, patience=1)
    for _ in range(6):  # a model from scratch scores nothing for a while
        plateau.step(0.0)
    plateau.step(0.2, warming_up=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02)
    saved = plateau.state_dict()
    again = recipe.Plateau(optimizer, factor=0.1, patience=1)
    again.load_state_dict(saved)
    assert not again.started
    for score in (0.1, 0.1, 0.1):  # started, then stalled past the patience
        again.step(score)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.002)
    assert again.state_dict()["started"]
