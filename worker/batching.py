"""Micro-batching inside one worker process: task threads submit decoded photos, one thread
runs the model on up to `max_size` of them at a time (or what arrived within `max_wait_s`).

Each Celery task waits for its own photo's result and writes its own detections, so a
message is acknowledged (acks_late) only after its photo's rows are committed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from PIL import Image

from worker import metrics

if TYPE_CHECKING:
    import torch

    from ml.detector import Detection as Found

logger = logging.getLogger(__name__)


class Predictor(Protocol):
    def predict(
        self,
        images: list[Image.Image | torch.Tensor],
        score_threshold: float | None,
        max_detections: int | None,
    ) -> list[list[Found]]: ...


class DeadlineExceeded(RuntimeError):
    """A photo ran out of its time (TRASHMAP_TASK_TIME_LIMIT) before its result was ready."""


@dataclass(frozen=True)
class Model:
    """A loaded model version, as the batcher needs it; `score_threshold` None = the
    predictor's own (a checkpoint's)."""

    version_id: int
    label: str
    predictor: Predictor
    score_threshold: float | None = None


@dataclass(frozen=True)
class Inference:
    """One photo's result: which version ran, what it found, and its batch's model time."""

    model_version_id: int
    found: list[Found]
    batch_seconds: float
    batch_size: int


@dataclass
class Job:
    photo_id: int
    image: Image.Image | torch.Tensor
    model_version_id: int | None
    deadline: float = float("inf")  # time.monotonic() past which nobody waits for the result
    future: Future[Inference] = field(default_factory=Future)


class Batcher:
    """Collects submitted photos into batches and runs them on one inference thread."""

    def __init__(
        self,
        resolve: Callable[[int | None], Model],
        max_size: int,
        max_wait_s: float,
        max_detections: int,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.resolve = resolve  # None -> the version to use now (checks the active one)
        self.max_size = max(1, max_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_detections = max_detections
        self.after_batch = after_batch
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # When the running batch began (time.monotonic()), None while idle: the watchdog
        # (worker/watchdog.py) restarts a process whose batch never ends.
        self.busy_since: float | None = None

    def submit(
        self,
        photo_id: int,
        image: Image.Image | torch.Tensor,
        model_version_id: int | None,
        deadline: float = float("inf"),
    ) -> Future[Inference]:
        """Queue one decoded photo; the future resolves when its batch has run (or with
        DeadlineExceeded, unrun, when its turn comes after `deadline`)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="trashmap-batcher", daemon=True
                )
                self._thread.start()
        job = Job(photo_id, image, model_version_id, deadline)
        self._queue.put(job)
        return job.future

    def infer(
        self,
        photo_id: int,
        image: Image.Image | torch.Tensor,
        model_version_id: int | None,
        timeout_s: float,
    ) -> Inference:
        """Submit and wait at most `timeout_s` for the photo's batch (task threads call
        this): a batch stuck past it fails its photos with DeadlineExceeded, not the worker."""
        future = self.submit(
            photo_id, image, model_version_id, deadline=time.monotonic() + timeout_s
        )
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise DeadlineExceeded(
                "no model result within the time limit (TRASHMAP_TASK_TIME_LIMIT)"
            ) from None

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_size:
                remaining = deadline - time.monotonic()
                try:
                    job = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else (self._queue.get_nowait())
                    )
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(job)
            self.busy_since = time.monotonic()
            try:
                self.run(batch)
            except BaseException as exc:  # never leave a task waiting forever
                logger.exception("batch of photos %s failed", [j.photo_id for j in batch])
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            finally:
                self.busy_since = None

    def run(self, batch: list[Job]) -> None:
        """Run one batch: group by model version, then predict each group.

        A group that fails is run again photo by photo, so only the photo that causes the
        error gets it (one odd image must not fail the photos batched with it).
        """
        groups: dict[int, tuple[Model, list[Job]]] = {}
        current: Model | None = None
        now = time.monotonic()
        for job in batch:
            if job.deadline <= now:
                job.future.set_exception(
                    DeadlineExceeded("its time ran out while it waited for the model")
                )
                continue
            try:
                if job.model_version_id is None:
                    current = current or self.resolve(None)
                    model = current
                else:
                    model = self.resolve(job.model_version_id)
            except Exception as exc:
                job.future.set_exception(exc)
                continue
            groups.setdefault(model.version_id, (model, []))[1].append(job)
        for model, jobs in groups.values():
            t0 = time.perf_counter()
            try:
                found = self._predict(model, jobs)
            except Exception as exc:
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                else:
                    logger.warning(
                        "batch of photos %s failed (%s: %s); running each alone",
                        [j.photo_id for j in jobs],
                        type(exc).__name__,
                        exc,
                    )
                    self._run_alone(model, jobs)
                continue
            seconds = time.perf_counter() - t0
            metrics.BATCH_SIZE.observe(len(jobs))
            metrics.BATCH_SECONDS.observe(seconds)
            logger.info(
                "batch of %d photos (%s) on %s: %.0f ms",
                len(jobs),
                ", ".join(str(j.photo_id) for j in jobs),
                model.label,
                seconds * 1000,
            )
            for job, detections in zip(jobs, found, strict=True):
                job.future.set_result(Inference(model.version_id, detections, seconds, len(jobs)))
        if self.after_batch is not None:
            self.after_batch()

    def _predict(self, model: Model, jobs: list[Job]) -> list[list[Found]]:
        return model.predictor.predict(
            [job.image for job in jobs], model.score_threshold, self.max_detections
        )

    def _run_alone(self, model: Model, jobs: list[Job]) -> None:
        for job in jobs:
            t0 = time.perf_counter()
            try:
                (found,) = self._predict(model, [job])
            except Exception as exc:
                logger.warning("photo %s: the model failed on it alone: %s", job.photo_id, exc)
                job.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - t0
            job.future.set_result(Inference(model.version_id, found, seconds, 1))
