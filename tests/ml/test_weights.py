"""Starting weights: a local file warm-starts every tensor that fits; other files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ml.detector import ModelInfo, build_model, save_checkpoint
from ml.weights import WeightsError, freeze_batchnorm, initial_model

ARCH = "fasterrcnn_mobilenet_v3_large_fpn"


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(ARCH, 91, min_size=128, max_size=172)  # COCO-shaped: 90 classes + bg


def test_a_state_dict_file_warm_starts_all_but_the_class_head(
    source: torch.nn.Module, tmp_path: Path
) -> None:
    path = tmp_path / "coco.pth"
    torch.save(source.state_dict(), path)
    model = initial_model(ARCH, 4, weights=str(path), min_size=128, max_size=172)
    loaded, original = model.state_dict(), source.state_dict()
    body = "backbone.body.0.0.weight"
    assert torch.equal(loaded[body], original[body])
    assert torch.equal(loaded["rpn.head.conv.0.0.weight"], original["rpn.head.conv.0.0.weight"])
    assert loaded["roi_heads.box_predictor.cls_score.weight"].shape == (4, 1024)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())


def test_an_earlier_trashmap_checkpoint_also_warm_starts(
    source: torch.nn.Module, tmp_path: Path
) -> None:
    info = ModelInfo(arch=ARCH, class_names=tuple(f"c{i}" for i in range(90)))
    path = save_checkpoint(tmp_path / "old.pt", source, info)
    model = initial_model(ARCH, 2, weights=str(path), min_size=128, max_size=172)
    assert torch.equal(
        model.state_dict()["backbone.fpn.inner_blocks.0.0.weight"],
        source.state_dict()["backbone.fpn.inner_blocks.0.0.weight"],
    )


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    other = build_model("fasterrcnn_resnet50_fpn", 2, min_size=128, max_size=172)
    path = tmp_path / "resnet.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsError, match="another --model"):
        initial_model(ARCH, 2, weights=str(path), min_size=128, max_size=172)
    with pytest.raises(WeightsError, match="'none', 'torchvision' or an existing file"):
        initial_model(ARCH, 2, weights="missing.pth", min_size=128, max_size=172)


def test_frozen_batchnorm_computes_what_batchnorm_does_in_eval(source: torch.nn.Module) -> None:
    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    block.train()
    block(torch.randn(4, 3, 16, 16))  # give the running statistics values
    block.eval()
    x = torch.randn(2, 3, 16, 16)
    expected = block(x)
    assert freeze_batchnorm(block) == 1
    assert isinstance(block[1], FrozenBatchNorm2d)
    assert torch.allclose(block(x), expected, atol=1e-5)
