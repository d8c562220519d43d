"""The worker feeds the model what evaluation feeds it: one decode-and-resize, within a PSNR.

Evaluation decodes each photo in full and resizes it (`eval_transforms`); the worker may
decode a JPEG at a reduced DCT scale first (TRASHMAP_DRAFT_DECODE). Measured on these
photos over inputs of 320-1024 px, the two model inputs stay at 47.3 dB PSNR or more
since draft decoding leaves 1.5x of the downscale to the resize (trashmap.imaging's
DRAFT_HEADROOM); decoding just down to the input size gave as little as 35.6 dB (the first
case below), 40.9 dB (the second) and 44.8 dB (the fourth). 45 dB, an RMS difference of
1.4 grey levels, is below what re-encoding the same model input as a JPEG at quality 95
changes (36-48 dB on these photos), the compression every phone photo already carries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from ml.categories import ClassSet
from ml.data import TacoDataset
from ml.detector import Detector, save_checkpoint
from ml.transforms import eval_transforms
from tests.conftest import PHOTOS_DIR
from tests.worker.conftest import small_detector
from trashmap.db import make_session_factory
from trashmap.imaging import oriented_size
from trashmap.settings import Settings
from worker.loader import ModelLoader

# The worker's input must stay this close to evaluation's (see the module docstring).
MIN_PSNR_DB = 45.0

CASES = [
    # photo, model input (min side, max side), the DCT scale draft decoding picks
    ("exifr__test_fixtures_IMG_20180725_163423-tiny.jpg", (320, 512), 1),
    ("exifsamples__jpg_mobile_HMD_Nokia_8.3_5G.jpg", (320, 512), 4),
    ("exifsamples__jpg_mobile_HMD_Nokia_8.3_5G.jpg", (800, 1333), 2),
    ("exifsamples__jpg_tests_87_OSError.jpg", (320, 512), 2),
    # EXIF orientation 6: the draft is turned upright like the full decode.
    ("exifpy__tests_resources_jpg_tests_Xiaomi_Mi_9T_KeyError.jpg", (800, 1333), 2),
]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two float images in [0, 1], in dB."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def evaluation_input(name: str, size: tuple[int, int]) -> torch.Tensor:
    """What `trashmap ml evaluate` feeds the model for this photo."""
    width, height = oriented_size(PHOTOS_DIR / name)
    coco = {
        "images": [{"id": 1, "file_name": name, "width": width, "height": height}],
        "annotations": [],
        "categories": [{"id": 1, "name": "litter", "supercategory": "litter"}],
    }
    dataset = TacoDataset(coco, PHOTOS_DIR, ClassSet("litter", ("litter",)), eval_transforms(*size))
    image, _ = dataset[0]
    return image.as_subclass(torch.Tensor)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    detector = small_detector(seed=5)
    path = tmp_path_factory.mktemp("model_input") / "seed5.pt"
    return save_checkpoint(path, detector.model, replace(detector.info, name="model-input"))


@pytest.fixture(scope="module")
def loaders(
    pg_settings: Settings, pg_engine: sa.Engine, checkpoint: Path
) -> Iterator[dict[tuple[int, int], ModelLoader]]:
    """One worker model loader per input size, each pinned to the checkpoint (none active)."""
    made: dict[tuple[int, int], ModelLoader] = {}
    sessions = make_session_factory(pg_engine)
    for size in {size for _, size, _ in CASES}:
        settings = replace(
            pg_settings, weights=checkpoint, min_size=size[0], max_size=size[1], draft_decode=True
        )
        loader = ModelLoader(settings, sessions, untrained=False, pinned=True)
        loader.start()
        made[size] = loader
    yield made


@pytest.mark.parametrize(("name", "size", "scale"), CASES)
def test_the_worker_feeds_the_model_what_evaluation_feeds_it(
    loaders: dict[tuple[int, int], ModelLoader], name: str, size: tuple[int, int], scale: int
) -> None:
    loader = loaders[size]
    assert loader.current is not None
    detector: Detector = loader.current.predictor.detector  # type: ignore[attr-defined]
    image, factor = loader.decode((PHOTOS_DIR / name).read_bytes())
    worker = detector.model_input(image)
    evaluation = evaluation_input(name, size)
    assert worker.shape == evaluation.shape
    difference = psnr(worker, evaluation)
    assert difference >= MIN_PSNR_DB, f"worker and evaluation inputs differ: {difference:.1f} dB"
    # Still the speed-up draft decoding is for: the decode skipped pixels it could.
    assert round(factor) == scale, "draft decoding picked another DCT scale"
