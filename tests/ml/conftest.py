"""Fixtures for ml/: generated shape datasets and the official TACO annotations; no downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ml.synthetic import ShapesSpec, make_shapes_dataset
from ml.train import TrainOptions, TrainResult
from ml.train import main as train_main
from tests.conftest import TEST_DATA

TACO_ANNOTATIONS = TEST_DATA / "taco" / "annotations.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the `trained` model are slow: the fixture trains one (minutes on a CPU)."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads() -> None:
    # Two cores, shared with other test runs: more threads than cores only adds contention.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def taco_annotations() -> Path:
    """The official TACO annotation file (read-only, committed under tests/data/taco)."""
    return TACO_ANNOTATIONS


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes dataset: folder with annotations.json and shapes/*.jpg, 2 negatives."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, ShapesSpec(images=10, negatives=2, seed=7))
    return root


# The "short training run at a small input size": a MobileNet from scratch (no weights can be
# downloaded) at 144 px. SGD with warm-up, few sampled boxes per image, and BatchNorm
# statistics recomputed before each validation: without that, running averages lag so far
# behind the fast-moving weights that validation sees no detections for epochs at a time.
SMALL = {
    "model": "fasterrcnn_mobilenet_v3_large_fpn",
    "weights": "none",
    "min_size": 144,
    "max_size": 192,
    "optimizer": "sgd",
    "lr": 0.02,
    "warmup_iters": 30,
    "precise_bn": 8,
    "rois_per_image": 32,
    "rpn_proposals": 150,
    "workers": 0,
    "progress": False,
    "tensorboard": True,
}
# Objects of 44-80 px match the MobileNet FPN's coarse anchors (strides 16 and up) well.
SHAPES = {"width": 192, "height": 144, "min_side": 44, "max_side": 80}


@pytest.fixture(scope="session")
def shape_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train and held-out test sets of generated shapes, from different seeds."""
    root = tmp_path_factory.mktemp("shape_splits")
    train = make_shapes_dataset(
        root, ShapesSpec(images=48, negatives=2, seed=1, folder="train", **SHAPES), "train.json"
    )
    test = make_shapes_dataset(
        root, ShapesSpec(images=24, seed=2, folder="test", **SHAPES), "test.json"
    )
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def trained(
    shape_splits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainOptions, TrainResult]:
    """One short training run shared by several tests (the slow part of tests/ml).

    ReduceLROnPlateau with patience 1 settles the weights once validation stops improving;
    seeds 0-3 then reached test mAP50 0.77-0.84 (0.39-0.70 without it).
    """
    options = TrainOptions(
        annotations=shape_splits["train"],
        images=shape_splits["train"].parent,
        test_annotations=shape_splits["test"],
        out=tmp_path_factory.mktemp("run"),
        classes="litter",
        epochs=12,
        batch_size=4,
        val_fraction=0.2,
        val_images=2,
        seed=0,
        lr_patience=1,
        lr_factor=0.3,
        **SMALL,
    )
    return options, train_main(options)
