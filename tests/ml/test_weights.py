"""Starting weights: a local file warm-starts every tensor that fits; other files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ml.detector import ARCHITECTURES, ModelInfo, build_model, save_checkpoint
from ml.weights import (
    TORCHVISION_WEIGHTS,
    WeightsError,
    backbone_stages,
    freeze_batchnorm,
    initial_model,
    resolve_bn,
)

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


def _recipe(model: torch.nn.Module) -> tuple[set[str], list[str]]:
    """What trains, and which normalisation each layer has."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = [type(m).__name__ for m in model.modules() if "BatchNorm" in type(m).__name__]
    return trainable, norms


def test_torchvision_weights_and_a_file_of_them_give_one_recipe(
    source: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's COCO file, as its weights API finds it in TORCH_HOME's cache.
    _, coco = ARCHITECTURES[ARCH]
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / Path(coco.url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    local = tmp_path / "coco.pth"
    torch.save(source.state_dict(), local)
    built = {
        weights: initial_model(
            ARCH,
            4,
            weights=weights,
            min_size=128,
            max_size=172,
            trainable_backbone_layers=2,
            bn="train",
        )
        for weights in (TORCHVISION_WEIGHTS, str(local))
    }
    via_api, via_file = built.values()
    assert _recipe(via_api) == _recipe(via_file)
    assert via_api.state_dict().keys() == via_file.state_dict().keys()
    for name, tensor in via_api.state_dict().items():
        if not name.startswith("roi_heads.box_predictor"):
            assert torch.equal(tensor, via_file.state_dict()[name]), name
    # --trainable-backbone-layers holds for the file too: only the last 2 stages train, and
    # the frozen stages' BatchNorm statistics stay put in train mode.
    stages = backbone_stages(via_file)
    for stage in stages[:-2]:
        for module in stage:
            assert not any(p.requires_grad for p in module.parameters())
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())
    assert any(
        isinstance(m, torch.nn.BatchNorm2d) for s in stages[-2:] for b in s for m in b.modules()
    )
    stem = {
        k: v.clone() for k, v in via_file.state_dict().items() if k.startswith("backbone.body.0.")
    }
    via_file.train()
    via_file(
        [torch.rand(3, 128, 160)],
        [{"boxes": torch.tensor([[10.0, 10, 60, 60]]), "labels": torch.tensor([1])}],
    )
    assert all(torch.equal(v, via_file.state_dict()[k]) for k, v in stem.items())


def test_from_scratch_every_stage_trains_and_the_bn_policy_follows_the_batch() -> None:
    model = initial_model(ARCH, 3, weights="none", min_size=128, max_size=172, bn="train")
    assert all(p.requires_grad for p in model.parameters())
    assert resolve_bn("auto", pretrained=True, batch_size=4, distributed=False) == "frozen"
    assert resolve_bn("auto", pretrained=True, batch_size=16, distributed=False) == "train"
    assert resolve_bn("auto", pretrained=True, batch_size=16, distributed=True) == "sync"
    assert resolve_bn("auto", pretrained=False, batch_size=2, distributed=False) == "train"
    assert resolve_bn("frozen", pretrained=False, batch_size=64, distributed=True) == "frozen"
    frozen = initial_model(ARCH, 3, weights="none", min_size=128, max_size=172, bn="frozen")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
