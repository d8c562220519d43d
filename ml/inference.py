"""The fast inference path: shape-grouped batches, mixed precision, optional slicing.

Shared by the detection workers and `trashmap bench infer`. Batches group images whose
resized, padded shape is the same, so no image is padded more than it would be alone and a
batch finds exactly what one-at-a-time prediction finds (up to float rounding). With slice
settings, each photo's tiles join those batches through `ml.slicing.predict_sliced`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from ml.detector import Detection, Detector
from ml.slicing import SliceOptions, predict_sliced

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Autocast dtype of each reduced precision; evaluation uses the same.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' is bf16 on a CUDA GPU that supports it and fp32 everywhere else."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def padded_shape(
    height: int, width: int, min_size: int, max_size: int, divisor: int = 32
) -> tuple[int, int]:
    """The (h, w) torchvision's detection transform resizes and pads an image to.

    Mirrors GeneralizedRCNNTransform in float32, so images sharing this key batch without
    any padding beyond what each gets alone.
    """
    short = torch.tensor(float(min(height, width)))
    long = torch.tensor(float(max(height, width)))
    scale = torch.min(float(min_size) / short, float(max_size) / long).item()
    new_h, new_w = math.floor(height * scale), math.floor(width * scale)
    return (math.ceil(new_h / divisor) * divisor, math.ceil(new_w / divisor) * divisor)


def group_by_shape(
    sizes: Sequence[tuple[int, int]], min_size: int, max_size: int, max_batch: int
) -> list[list[int]]:
    """Indices of images (height, width) grouped by padded shape, in chunks of max_batch."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, (height, width) in enumerate(sizes):
        groups.setdefault(padded_shape(height, width, min_size, max_size), []).append(index)
    return [
        members[start : start + max_batch]
        for members in groups.values()
        for start in range(0, len(members), max_batch)
    ]


class BatchPredictor:
    """Runs one Detector on many images at once, as fast as its device allows.

    `slicing` (off by default) adds native-resolution tiles to each photo's whole-image pass.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        max_batch: int = 8,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile_model: bool = False,
        slicing: SliceOptions | None = None,
    ) -> None:
        self.detector = detector
        self.slicing = slicing or SliceOptions()
        self.max_batch = max(1, max_batch)
        self.precision = resolve_precision(precision, detector.device)
        self.on_cuda = detector.device.type == "cuda"
        if channels_last if channels_last is not None else self.on_cuda:
            # Tensor cores want NHWC; on CPUs the gain is small and not worth a copy.
            detector.model.to(memory_format=torch.channels_last)
        if compile_model:
            # The backbone sees few distinct shapes (batches are grouped by shape); the
            # detection heads have data-dependent shapes and stay eager.
            backbone = detector.model.get_submodule("backbone")
            # torch.compile wraps a Module in an OptimizedModule, itself a Module.
            detector.model.backbone = cast(torch.nn.Module, torch.compile(backbone, dynamic=False))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.detector.device.type, dtype=AUTOCAST_DTYPES[self.precision])

    def _as_tensor(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        tensor = image if isinstance(image, torch.Tensor) else pil_to_tensor(image)
        if self.on_cuda and tensor.device.type == "cpu":
            # Page-locked memory lets the copy to the GPU run asynchronously.
            tensor = tensor.pin_memory()
        return tensor

    def chunks(self, images: Sequence[Image.Image | torch.Tensor]) -> Iterator[list[int]]:
        """Index groups one model call each: same padded shape, at most max_batch."""
        sizes = [_size(image) for image in images]
        min_size, max_size = self.detector.input_size
        yield from group_by_shape(sizes, min_size, max_size, self.max_batch)

    @torch.inference_mode()
    def predict(
        self,
        images: Sequence[Image.Image | torch.Tensor],
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> list[list[Detection]]:
        """Detections per image (boxes in that image's pixels), in the order given."""
        tensors = [self._as_tensor(image) for image in images]
        if not self.slicing.enabled:
            return self.predict_whole(tensors, score_threshold, max_detections)
        # Tiles are cut on the device: each photo crosses to it once, not once per tile.
        on_device = [t.to(self.detector.device, non_blocking=True) for t in tensors]
        return predict_sliced(
            self.detector,
            on_device,
            self.slicing,
            score_threshold,
            max_detections,
            predict=self.predict_whole,
        )

    @torch.inference_mode()
    def predict_whole(
        self,
        images: Sequence[torch.Tensor],
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> list[list[Detection]]:
        """Each image as one model input (no tiles): one call per shape group, in order."""
        results: list[list[Detection]] = [[] for _ in images]
        for chunk in self.chunks(images):
            with self._autocast():
                found = self.detector.predict(
                    [images[i] for i in chunk], score_threshold, max_detections
                )
            for index, detections in zip(chunk, found, strict=True):
                results[index] = detections
        return results

    def memory(self) -> dict[str, int]:
        """Bytes of GPU memory allocated / reserved / peak on this predictor's device."""
        if not self.on_cuda:
            return {}
        device = self.detector.device
        return {
            "allocated": torch.cuda.memory_allocated(device),
            "reserved": torch.cuda.memory_reserved(device),
            "peak": torch.cuda.max_memory_allocated(device),
        }


def _size(image: Image.Image | torch.Tensor) -> tuple[int, int]:
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return image.size[1], image.size[0]
