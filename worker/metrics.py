"""Prometheus metrics of a detection worker, served on TRASHMAP_METRICS_PORT.

The threads pool runs every task and the model in one process, so a plain HTTP server in
that process sees everything (no multiprocess mode needed). Metric objects live in
prometheus_client's default registry, as its documentation recommends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

PHOTOS = Counter(
    "trashmap_worker_photos",
    "Photos a worker finished, by outcome (done, failed, missing)",
    ["outcome"],
)
FAILURES = Counter(
    "trashmap_worker_failures", "Photos marked failed, by reason (error class)", ["reason"]
)
DETECTIONS = Counter("trashmap_worker_detections", "Detections stored")
STAGE_SECONDS = Histogram(
    "trashmap_worker_stage_seconds",
    "Seconds per photo in each stage: load (bytes from the database), decode, wait (for a "
    "batch), inference (its batch's model time), write (the detections' transaction)",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "trashmap_worker_batch_size", "Photos per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64)
)
BATCH_SECONDS = Histogram(
    "trashmap_worker_batch_seconds", "Model time per micro-batch", buckets=_STAGE_BUCKETS
)
MODEL = Gauge(
    "trashmap_worker_model_info",
    "1 for the model version this worker runs now",
    ["model_version_id", "label"],
)
MODEL_SWITCHES = Counter("trashmap_worker_model_switches", "Times a worker loaded another version")
GPU_MEMORY = Gauge(
    "trashmap_worker_gpu_memory_bytes",
    "GPU memory of the worker's device (allocated, reserved, peak)",
    ["device", "kind"],
)
REQUEUED = Counter("trashmap_reconciler_requeued", "Photos the reconciler queued again")


def observe_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage).observe(seconds)


def set_model(version_id: int, label: str) -> None:
    """Only the running version reads 1; an earlier one is removed."""
    MODEL.clear()
    MODEL.labels(str(version_id), label).set(1)


def watch_gpu_memory(device: str, read: Callable[[], dict[str, int]]) -> None:
    """Refresh the GPU memory gauges from `read()` after each batch."""
    for kind, value in read().items():
        GPU_MEMORY.labels(device, kind).set(value)


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Start the /metrics HTTP server in this process; False (logged) if the port is taken."""
    if not port:
        return False
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        logger.warning("metrics: cannot listen on port %s (%s); no worker metrics", port, exc)
        return False
    logger.info("metrics: serving Prometheus metrics on port %s", port)
    return True
