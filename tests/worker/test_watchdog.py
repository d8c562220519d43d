"""The batch watchdog restarts a worker whose inference is stuck, and leaves a busy one be."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from worker.batching import Batcher, DeadlineExceeded, Model
from worker.watchdog import Watchdog


def test_a_batch_stuck_past_the_limit_fires_once() -> None:
    fired: list[float] = []
    done = threading.Event()

    def on_wedged(stuck_s: float) -> None:
        fired.append(stuck_s)
        done.set()

    started = time.monotonic()
    dog = Watchdog(lambda: started, limit_s=0.3, on_wedged=on_wedged, interval_s=0.02)
    try:
        assert done.wait(10)
        time.sleep(0.2)  # it stops watching after firing: never twice
        assert len(fired) == 1 and fired[0] > 0.3
    finally:
        dog.close()


def test_idle_and_fresh_batches_never_fire() -> None:
    fired: list[float] = []
    current: list[float | None] = [None]
    dog = Watchdog(lambda: current[0], limit_s=0.5, on_wedged=fired.append, interval_s=0.02)
    try:
        for _ in range(20):  # a new batch every 50 ms: each younger than the limit
            current[0] = time.monotonic()
            time.sleep(0.05)
        current[0] = None  # idle
        time.sleep(0.7)
        assert fired == []
    finally:
        dog.close()


class _StuckPredictor:
    """A model call that never returns until released, as one hung in native code."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, images, score_threshold, max_detections):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.release.wait(30)
        return [[] for _ in images]


def test_a_stuck_batch_is_seen_and_an_ended_one_is_not() -> None:
    stuck = _StuckPredictor()
    batcher = Batcher(
        lambda _: Model(1, "stuck", stuck), max_size=4, max_wait_s=0.0, max_detections=5
    )
    fired = threading.Event()
    dog = Watchdog(
        lambda: batcher.busy_since, limit_s=0.3, on_wedged=lambda _: fired.set(), interval_s=0.02
    )
    try:
        assert batcher.busy_since is None
        future = batcher.submit(7, Image.new("RGB", (32, 32)), None)
        assert stuck.entered.wait(10)
        # The task gives up on its photo at its deadline; the batch thread stays stuck.
        with pytest.raises(DeadlineExceeded):
            batcher.infer(8, Image.new("RGB", (32, 32)), None, timeout_s=0.2)
        assert fired.wait(10), "the watchdog never saw the stuck batch"
        stuck.release.set()
        assert future.result(10).found == []
        deadline = time.monotonic() + 10
        while batcher.busy_since is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert batcher.busy_since is None  # idle again once the batch ended
    finally:
        stuck.release.set()
        dog.close()
        batcher.close()
