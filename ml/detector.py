"""The trash detector: model builder, self-describing checkpoints, and batched prediction.

Shared by training (`ml/`) and the detection workers, so a checkpoint written by
`trashmap ml train` loads here unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torchvision.models import detection
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.transforms.v2 import functional as F  # noqa: N812 (torchvision convention)

from ml.transforms import model_input

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "trashmap-detector"
CHECKPOINT_FORMAT_VERSION = 1

# Architecture name -> (builder, its COCO weights enum). All are torchvision Faster R-CNNs.
ARCHITECTURES: dict[str, tuple[Callable[..., Any], Any]] = {
    "fasterrcnn_resnet50_fpn_v2": (
        detection.fasterrcnn_resnet50_fpn_v2,
        detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    ),
    "fasterrcnn_resnet50_fpn": (
        detection.fasterrcnn_resnet50_fpn,
        detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": (
        detection.fasterrcnn_mobilenet_v3_large_fpn,
        detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
    ),
    # torchvision's CPU/mobile configuration: 150 region proposals instead of 1000.
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        detection.fasterrcnn_mobilenet_v3_large_320_fpn,
        detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    ),
}
DEFAULT_ARCH = "fasterrcnn_resnet50_fpn_v2"


class CheckpointError(ValueError):
    """A file is not a usable trashmap detector checkpoint."""


@dataclass(frozen=True)
class Detection:
    """One detected object; box corners in the input image's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about itself; travels with the weights."""

    arch: str
    class_names: tuple[str, ...]
    name: str = "trashmap"
    version: str = "0"
    score_threshold: float = 0.5
    min_size: int = 800
    max_size: int = 1333
    metrics: dict[str, Any] = field(default_factory=dict)
    # Slice settings as stored under the checkpoint's "slicing" key (read by ml.slicing).
    slicing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Classes the model predicts, background (index 0) included."""
        return len(self.class_names) + 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks the first GPU when there is one; otherwise the name is taken as is."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but this machine has no usable CUDA GPU")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(
            f"device {device!r} asked for, but this machine has only "
            f"{torch.cuda.device_count()} CUDA GPU(s)"
        )
    return resolved


def build_model(
    arch: str,
    num_classes: int,
    *,
    min_size: int = 800,
    max_size: int = 1333,
    weights: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """A torchvision Faster R-CNN with a fresh `FastRCNNPredictor` for `num_classes` (with bg).

    `weights="coco"` starts from torchvision's COCO weights (downloaded on first use, cached
    under TORCH_HOME); None builds a randomly initialised model and downloads nothing.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    builder, coco_weights = ARCHITECTURES[arch]
    model = builder(
        weights=coco_weights if weights == "coco" else None,
        weights_backbone=None,
        min_size=min_size,
        max_size=max_size,
        **kwargs,
    )
    in_features = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)
    return model


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: Path, model: torch.nn.Module, info: ModelInfo, **extra: Any) -> Path:
    """Write the self-describing checkpoint that `Detector.from_checkpoint` reads."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": info.arch,
        "class_names": list(info.class_names),
        "name": info.name,
        "version": info.version,
        "score_threshold": info.score_threshold,
        "min_size": info.min_size,
        "max_size": info.max_size,
        "metrics": info.metrics,
        "slicing": info.slicing,
        "created": datetime.now(UTC).isoformat(),
        "state_dict": model.state_dict(),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a half checkpoint under the real name
    return path


def read_checkpoint(path: Path) -> tuple[ModelInfo, dict[str, Any]]:
    """Parse and validate a checkpoint file; returns its info and the raw payload."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read as a torch checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a trashmap detector checkpoint (train one with `trashmap ml train`)"
        )
    if payload.get("format_version", 0) > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer trashmap; upgrade to load it")
    try:
        info = ModelInfo(
            arch=payload["arch"],
            class_names=tuple(payload["class_names"]),
            name=payload.get("name", "trashmap"),
            version=str(payload.get("version", "0")),
            score_threshold=float(payload.get("score_threshold", 0.5)),
            min_size=int(payload.get("min_size", 800)),
            max_size=int(payload.get("max_size", 1333)),
            metrics=dict(payload.get("metrics") or {}),
            slicing=dict(payload.get("slicing") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} lacks a valid field: {exc}") from exc
    return info, payload


class Detector:
    """A loaded model plus the facts needed to run it: classes, threshold, input size."""

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        device: torch.device,
        weights_sha256: str | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.info = info
        self.device = device
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        *,
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> Detector:
        """Load a checkpoint written by `save_checkpoint`; sizes may be overridden."""
        path = Path(path)
        info, payload = read_checkpoint(path)
        if min_size or max_size:
            info = _with_sizes(info, min_size, max_size)
        model = build_model(
            info.arch, info.num_classes, min_size=info.min_size, max_size=info.max_size
        )
        try:
            model.load_state_dict(payload["state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: weights do not fit {info.arch}: {exc}") from exc
        logger.info("loaded detector %s:%s (%s) from %s", info.name, info.version, info.arch, path)
        return cls(model, info, resolve_device(device), weights_sha256=file_sha256(path))

    @classmethod
    def untrained(
        cls,
        class_names: Sequence[str],
        arch: str = DEFAULT_ARCH,
        device: str | torch.device = "cpu",
        *,
        min_size: int = 800,
        max_size: int = 1333,
        seed: int = 0,
    ) -> Detector:
        """A randomly initialised detector: its boxes mean nothing (demos and tests only).

        Seeded, so every worker process started this way holds the same weights.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(arch, len(class_names) + 1, min_size=min_size, max_size=max_size)
        info = ModelInfo(
            arch=arch,
            class_names=tuple(class_names),
            name="untrained",
            version=f"{arch}-seed{seed}-{min_size}",
            score_threshold=0.0,
            min_size=min_size,
            max_size=max_size,
        )
        return cls(model, info, resolve_device(device))

    @property
    def input_size(self) -> tuple[int, int]:
        """(min side, max side) the model resizes its inputs to."""
        return self.info.min_size, self.info.max_size

    def to_tensor(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """PIL image or uint8/float CHW tensor -> float CHW tensor in [0, 1] on the device."""
        if isinstance(image, Image.Image):
            tensor = F.pil_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)
        else:
            tensor = image
        tensor = tensor.to(self.device, non_blocking=True)
        return F.to_dtype(tensor, torch.float32, scale=True)

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[Image.Image | torch.Tensor],
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> list[list[Detection]]:
        """Detections for each image, best first, boxes in that image's own pixels."""
        if not images:
            return []
        threshold = self.info.score_threshold if score_threshold is None else score_threshold
        # The model drops boxes below its own threshold before NMS; keep it in step with ours.
        # torch types every submodule as Tensor | Module.
        cast(RoIHeads, self.model.roi_heads).score_thresh = threshold
        pixels = [self._pixels(image) for image in images]
        inputs = [self.model_input(p) for p in pixels]
        outputs = self.model(inputs)
        return [
            self._detections(out, threshold, max_detections, _scale(p, i))
            for out, p, i in zip(outputs, pixels, inputs, strict=True)
        ]

    def model_input(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """The float CHW tensor the network is fed for `image`, on the device.

        Resized exactly as evaluation resizes (`ml.transforms.model_input`), so the scores
        measured there hold here.
        """
        return model_input(self._pixels(image), *self.input_size)

    def _pixels(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        if isinstance(image, Image.Image):
            tensor = F.pil_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)
        else:
            tensor = image
        return tensor.to(self.device, non_blocking=True)

    def _detections(
        self,
        output: dict[str, torch.Tensor],
        threshold: float,
        limit: int | None,
        scale: torch.Tensor | None = None,
    ) -> list[Detection]:
        # Boxes come in the model input's pixels; the caller's image may be larger.
        boxes = (output["boxes"].float().cpu() * (1.0 if scale is None else scale)).tolist()
        scores = output["scores"].float().cpu().tolist()
        labels = output["labels"].cpu().tolist()
        found = [
            Detection(
                label=self.info.class_names[label - 1],
                score=min(max(score, 0.0), 1.0),
                box=(box[0], box[1], box[2], box[3]),
            )
            for box, score, label in zip(boxes, scores, labels, strict=True)
            if score >= threshold and label > 0
        ]
        # Best first; equal scores (common in weak models) in box order, not in whatever
        # order a batch's float rounding left them.
        found.sort(key=lambda d: (-d.score, d.box))
        return found[:limit] if limit else found


def _scale(image: torch.Tensor, resized: torch.Tensor) -> torch.Tensor:
    """x, y, x, y factors from `resized`'s pixels back to `image`'s."""
    sx, sy = image.shape[-1] / resized.shape[-1], image.shape[-2] / resized.shape[-2]
    return torch.tensor([sx, sy, sx, sy], dtype=torch.float32)


def _with_sizes(info: ModelInfo, min_size: int | None, max_size: int | None) -> ModelInfo:
    from dataclasses import replace

    return replace(info, min_size=min_size or info.min_size, max_size=max_size or info.max_size)
