"""Photos/s of the worker's inference path against the tutorial's loop, in one run.

Tutorial loop: one photo at a time, full-resolution `Image.open().convert("RGB")`,
`ToTensor()`, `model([image])` under `torch.no_grad()`. Worker path: Pillow draft decoding
on a thread pool overlapping the model, shape-grouped batches (`ml.inference`),
`torch.inference_mode`. Same seeded model, same photos, same machine, interleaved.
Run: `trashmap bench infer [--json]` (or `python bench/infer_bench.py`).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import ToTensor
from tqdm import tqdm

from ml.detector import Detector
from ml.inference import BatchPredictor
from trashmap.imaging import decode_oriented

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "photos"
DEFAULT_PHOTOS = (
    "exifpy__tests_resources_jpg_tests_Xiaomi_Mi_9T_KeyError.jpg",  # 4000x3000, 4 MB
    "exifsamples__jpg_mobile_HMD_Nokia_8.3_5G.jpg",  # 4608x1976
    "exifsamples__jpg_hdr_iphone_hdr_NO.jpg",  # 3264x2448
)
Box = tuple[float, float, float, float]


@dataclass
class BenchConfig:
    photos: list[Path] = field(default_factory=list)
    count: int = 12
    arch: str = "fasterrcnn_mobilenet_v3_large_320_fpn"
    min_size: int = 320
    max_size: int = 512
    batch_size: int = 8
    device: str = "cpu"
    precision: str = "fp32"
    score_threshold: float = 0.05


def upright_copies(paths: list[Path], folder: Path) -> list[Path]:
    """Photos as stored pixels without an EXIF rotation, so the tutorial loop (which ignores
    EXIF) and the worker (which applies it) see the same image and can be compared."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            if image.getexif().get(0x0112, 1) in (None, 1):
                out.append(path)
                continue
            copy = folder / path.name
            image.convert("RGB").save(copy, "JPEG", quality=92)
            out.append(copy)
    return out


def tutorial_loop(
    model: torch.nn.Module, paths: list[Path], device: torch.device, class_names: tuple[str, ...]
) -> list[list]:
    """The tutorial's way: full decode, ToTensor, one image per forward pass."""
    results = []
    to_tensor = ToTensor()
    names = ("__background__", *class_names)
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            output = model([to_tensor(image).to(device)])[0]
            results.append(_boxes(output, names))
    return results


def worker_path(
    predictor: BatchPredictor, paths: list[Path], batch_size: int, draft: bool, threshold: float
) -> list[list]:
    """The worker's way: decode on threads (at reduced scale with draft), batched model."""
    target = predictor.detector.input_size if draft else None

    def decode(path: Path) -> tuple[Image.Image, float]:
        return decode_oriented(path.read_bytes(), target=target)

    results: list[list] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        decoded = pool.map(decode, paths)  # runs ahead while the model works on a batch
        batch: list[tuple[Image.Image, float]] = []
        for item in decoded:
            batch.append(item)
            if len(batch) == batch_size:
                results += _run(predictor, batch, threshold)
                batch = []
        if batch:
            results += _run(predictor, batch, threshold)
    return results


def _run(predictor: BatchPredictor, batch: list, threshold: float) -> list[list]:
    found = predictor.predict([image for image, _ in batch], threshold, None)
    return [
        [(d.label, d.score, tuple(v * factor for v in d.box)) for d in dets]
        for dets, (_, factor) in zip(found, batch, strict=True)
    ]


def _boxes(output: dict[str, torch.Tensor], names: tuple[str, ...]) -> list:
    return [
        (names[label], score, tuple(box))
        for box, score, label in zip(
            output["boxes"].float().tolist(),
            output["scores"].float().tolist(),
            output["labels"].tolist(),
            strict=True,
        )
    ]


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare(reference: list[list], other: list[list]) -> dict[str, Any]:
    """How far `other`'s boxes are from the reference's: each reference box is matched to the
    best-overlapping box of the same label."""
    max_diff, ious, unmatched, total = 0.0, [], 0, 0
    for ref, oth in zip(reference, other, strict=True):
        for label, _, box in ref:
            total += 1
            candidates = [b for lab, _, b in oth if lab == label]
            if not candidates:
                unmatched += 1
                continue
            best = max(candidates, key=lambda b: _iou(box, b))
            ious.append(_iou(box, best))
            max_diff = max(max_diff, max(abs(x - y) for x, y in zip(box, best, strict=True)))
    count_equal = sum(len(r) == len(o) for r, o in zip(reference, other, strict=True))
    return {
        "reference_boxes": total,
        "unmatched": unmatched,
        "photos_with_same_count": f"{count_equal}/{len(reference)}",
        "max_coordinate_diff_px": round(max_diff, 3),
        "mean_iou": round(sum(ious) / len(ious), 4) if ious else None,
        "share_iou_over_0.9": round(sum(i > 0.9 for i in ious) / len(ious), 4) if ious else None,
    }


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Both paths over the same photos, interleaved; photos/s, ratio and box agreement."""
    device = torch.device(config.device)
    torch.manual_seed(0)
    detector = Detector.untrained(
        [f"class_{i}" for i in range(1, 16)],
        config.arch,
        device,
        min_size=config.min_size,
        max_size=config.max_size,
        seed=0,
    )
    detector.model.roi_heads.score_thresh = config.score_threshold
    predictor = BatchPredictor(detector, max_batch=config.batch_size, precision=config.precision)
    sources = config.photos or [PHOTOS / name for name in DEFAULT_PHOTOS]
    with tempfile.TemporaryDirectory() as tmp:
        photos = upright_copies(sources, Path(tmp))
        paths = [photos[i % len(photos)] for i in range(config.count)]
        # Warm-up: first calls allocate and pick kernels.
        tutorial_loop(detector.model, paths[:1], device, detector.info.class_names)
        worker_path(predictor, paths[:1], 1, True, config.score_threshold)
        timings: dict[str, float] = {"tutorial": 0.0, "worker": 0.0, "worker_no_draft": 0.0}
        outputs: dict[str, list] = {}
        steps = [
            (
                "tutorial",
                lambda: tutorial_loop(detector.model, paths, device, detector.info.class_names),
            ),
            (
                "worker",
                lambda: worker_path(
                    predictor, paths, config.batch_size, True, config.score_threshold
                ),
            ),
            (
                "worker_no_draft",
                lambda: worker_path(
                    predictor, paths, config.batch_size, False, config.score_threshold
                ),
            ),
        ]
        for name, step in tqdm(steps, desc="bench", disable=not progress):
            _sync(device)
            t0 = time.perf_counter()
            outputs[name] = step()
            _sync(device)
            timings[name] = time.perf_counter() - t0
            sizes = sorted({Image.open(p).size for p in photos})
    n = len(paths)
    result = {
        "photos": n,
        "photo_sizes": [f"{w}x{h}" for w, h in sizes],
        "photo_mb": round(sum(p.stat().st_size for p in sources) / len(sources) / 2**20, 2),
        "model": f"{config.arch} (seeded random weights) at {config.min_size}/{config.max_size}",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "config": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in asdict(config).items()
            if k != "photos"
        },
        "tutorial_photos_per_s": round(n / timings["tutorial"], 3),
        "worker_photos_per_s": round(n / timings["worker"], 3),
        "worker_no_draft_photos_per_s": round(n / timings["worker_no_draft"], 3),
        "ratio": round(timings["tutorial"] / timings["worker"], 2),
        "ratio_no_draft": round(timings["tutorial"] / timings["worker_no_draft"], 2),
        "detections_no_draft_vs_tutorial": compare(outputs["tutorial"], outputs["worker_no_draft"]),
        "detections_draft_vs_tutorial": compare(outputs["tutorial"], outputs["worker"]),
    }
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(result: dict[str, Any]) -> str:
    """The README table rows for one run."""
    lines = [
        f"model: {result['model']}, device {result['device']}, {result['photos']} photos "
        f"({', '.join(result['photo_sizes'])}, {result['photo_mb']} MB average)",
        "",
        "| path | photos/s | ratio to tutorial |",
        "|---|---|---|",
        f"| tutorial loop | {result['tutorial_photos_per_s']} | 1.0 |",
        f"| worker path (draft decode) | {result['worker_photos_per_s']} | {result['ratio']} |",
        f"| worker path (draft off) | {result['worker_no_draft_photos_per_s']} | "
        f"{result['ratio_no_draft']} |",
        "",
        f"draft off vs tutorial: {result['detections_no_draft_vs_tutorial']}",
        f"draft on vs tutorial: {result['detections_draft_vs_tutorial']}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_bench(BenchConfig(), progress=False), indent=2))
    sys.exit(0)
