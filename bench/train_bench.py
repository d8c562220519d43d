"""Training and inference throughput of the detector: images/s and peak memory, per device.

Runs the real training path (TacoDataset -> v2 transforms -> engine.train_one_epoch) on a
generated shapes dataset, so it needs no download. Each configuration runs in a fresh
process, so CPU peak resident memory is that configuration's own.

    python bench/train_bench.py                      # CPU, and CUDA when present
    python bench/train_bench.py --device cuda --model fasterrcnn_resnet50_fpn_v2 \
        --min-size 800 --max-size 1333 --batch-size 8 --amp
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        action="append",
        choices=["cpu", "cuda"],
        help="device to measure (repeatable; default: cpu, plus cuda if present)",
    )
    parser.add_argument(
        "--model",
        action="append",
        help="architecture (repeatable; default: fasterrcnn_mobilenet_v3_large_fpn "
        "and fasterrcnn_resnet50_fpn_v2)",
    )
    parser.add_argument("--min-size", type=int, default=512, help="shorter input side")
    parser.add_argument("--max-size", type=int, default=853, help="longer input side bound")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(1024, 768),
        metavar=("W", "H"),
        help="generated photo size (landscape; half portrait)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per step")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: one config, JSON in
    return parser


def _measure(config: dict[str, Any]) -> dict[str, Any]:
    """Train `warmup + steps` batches, then predict as many; report speed and peak memory."""
    import torch

    from ml.categories import load_class_set
    from ml.data import GroupedBatchSampler, TacoDataset, collate
    from ml.detector import build_model
    from ml.engine import evaluate, peak_memory_bytes, reset_peak_memory, train_one_epoch
    from ml.synthetic import ShapesSpec, make_shapes_dataset
    from ml.transforms import eval_transforms, train_transforms

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    device = torch.device(config["device"])
    torch.manual_seed(0)
    batch, total = config["batch_size"], config["batch_size"] * (config["warmup"] + config["steps"])
    with tempfile.TemporaryDirectory() as tmp:
        width, height = config["image_size"]
        spec = ShapesSpec(
            images=total,
            width=width,
            height=height,
            min_side=width // 12,
            max_side=width // 5,
            max_objects=5,
        )
        annotations = make_shapes_dataset(Path(tmp), spec)
        classes = load_class_set("all", json.loads(annotations.read_text())["categories"])
        train_set = TacoDataset(
            annotations,
            Path(tmp),
            classes,
            train_transforms(config["min_size"], config["max_size"]),
        )
        model = build_model(
            config["model"],
            classes.num_classes,
            min_size=config["min_size"],
            max_size=config["max_size"],
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=config["amp"] and device.type == "cuda")
        order = list(range(len(train_set)))
        sampler = GroupedBatchSampler(order, train_set.aspect_groups(), batch)
        batches = list(
            torch.utils.data.DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)
        )
        train_one_epoch(
            model,
            optimizer,
            batches[: config["warmup"]],
            device,
            epoch=0,
            scaler=scaler,
            progress=False,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        reset_peak_memory(device)
        result = train_one_epoch(
            model,
            optimizer,
            batches[config["warmup"] :],
            device,
            epoch=1,
            scaler=scaler,
            progress=False,
        )
        train_peak = peak_memory_bytes(device)
        eval_set = TacoDataset(
            annotations, Path(tmp), classes, eval_transforms(config["min_size"], config["max_size"])
        )
        eval_batches = list(
            torch.utils.data.DataLoader(
                torch.utils.data.Subset(eval_set, range(batch * config["steps"])),
                batch_size=batch,
                collate_fn=collate,
            )
        )
        evaluate(model, eval_batches[:1], device, amp=scaler.is_enabled(), progress=False)
        reset_peak_memory(device)
        start = time.perf_counter()
        evaluate(model, eval_batches, device, amp=scaler.is_enabled(), progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return {
        **{k: v for k, v in config.items() if k != "single"},
        "train_images_per_s": round(result.images_per_s, 2),
        "train_peak_memory_mib": round(train_peak / 2**20),
        "infer_images_per_s": round(batch * config["steps"] / seconds, 2),
        "infer_peak_memory_mib": round(peak_memory_bytes(device) / 2**20),
        "torch": torch.__version__,
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "threads": torch.get_num_threads(),
    }


def _devices(requested: list[str] | None) -> list[str]:
    if requested:
        return requested
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every (device, model) in its own process and print a markdown table."""
    if args.single:
        print(json.dumps(_measure(json.loads(args.single))))
        return []
    models = args.model or ["fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2"]
    results = []
    for device in _devices(args.device):
        for model in models:
            config = {
                "device": device,
                "model": model,
                "min_size": args.min_size,
                "max_size": args.max_size,
                "image_size": list(args.image_size),
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": args.warmup,
                "amp": args.amp,
                "threads": args.threads,
            }
            done = subprocess.run(
                [sys.executable, __file__, "--single", json.dumps(config)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(f"{device} {model} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        "| device | model | input | batch | train img/s | train peak MiB "
        "| infer img/s | infer peak MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        amp = " amp" if r["amp"] and r["device"] == "cuda" else ""
        print(
            f"| {r['device']} ({r['device_name']}, {r['threads']} threads){amp} | {r['model']} "
            f"| {r['min_size']}/{r['max_size']} | {r['batch_size']} "
            f"| {r['train_images_per_s']} | {r['train_peak_memory_mib']} "
            f"| {r['infer_images_per_s']} | {r['infer_peak_memory_mib']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
