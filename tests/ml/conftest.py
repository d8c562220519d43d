"""Fixtures for ml/: generated shape datasets and the official TACO annotations; no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ml.synthetic import ShapesSpec, make_shapes_dataset
from ml.train import TrainOptions, TrainResult
from ml.train import main as train_main

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("TRASHMAP_SHARED_DATA", ROOT.parent / "shared" / "data"))
TACO_ANNOTATIONS = SHARED_DATA / "taco" / "annotations.json"
PHOTOS = SHARED_DATA / "photos"


@pytest.fixture(scope="session", autouse=True)
def _cpu_threads() -> None:
    # Two cores, shared with other test runs: more threads than cores only adds contention.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def taco_annotations() -> Path:
    """The official TACO annotation file (read-only)."""
    if not TACO_ANNOTATIONS.is_file():
        pytest.skip(f"the official TACO annotations are not at {TACO_ANNOTATIONS}")
    return TACO_ANNOTATIONS


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes dataset: folder with annotations.json and shapes/*.jpg, 2 negatives."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root, ShapesSpec(images=10, negatives=2, seed=7))
    return root


# A from-scratch MobileNet at 128 px learns the shapes within a CPU minute; these settings
# are the "short training run at a small input size" the learning test relies on.
SMALL = {
    "model": "fasterrcnn_mobilenet_v3_large_fpn",
    "weights": "none",
    "min_size": 128,
    "max_size": 172,
    "rois_per_image": 32,
    "rpn_proposals": 150,
    "workers": 0,
    "progress": False,
    "tensorboard": True,
}


@pytest.fixture(scope="session")
def shape_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train and held-out test sets of generated shapes, from different seeds."""
    root = tmp_path_factory.mktemp("shape_splits")
    train = make_shapes_dataset(
        root, ShapesSpec(images=48, negatives=2, seed=1, folder="train"), "train.json"
    )
    test = make_shapes_dataset(root, ShapesSpec(images=16, seed=2, folder="test"), "test.json")
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def trained(
    shape_splits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainOptions, TrainResult]:
    """One short training run shared by the tests below (the slow part of this module)."""
    options = TrainOptions(
        annotations=shape_splits["train"], images=shape_splits["train"].parent,
        test_annotations=shape_splits["test"], out=tmp_path_factory.mktemp("run"),
        classes="litter", epochs=12, batch_size=4, lr=1e-3, val_fraction=0.15,
        val_images=2, seed=0, **SMALL,
    )
    return options, train_main(options)
