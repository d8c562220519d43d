"""Which detector a worker process runs: the active model version, one asked for by a
reprocess, or its fallback (TRASHMAP_WEIGHTS, or a random model with --untrained), run
with the slice settings its checkpoint carries unless TRASHMAP_SLICE(_OVERLAP) override them.

Rollout rule: a worker follows the active version and looks for a change between batches
(at most every TRASHMAP_MODEL_CHECK_S). TRASHMAP_WEIGHTS is registered at start and
activated when no version is active; `trashmap worker --pin` keeps a worker on it instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, cast

from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from trashmap.db import session_scope
from trashmap.imaging import decode_oriented
from trashmap.models import UNTRAINED_KEY, ModelVersion
from trashmap.settings import Settings
from trashmap.versions import VersionError, VersionRef, activate, active_version, ref_of
from worker import metrics
from worker.batching import Model
from worker.versions import register_checkpoint as register_row

if TYPE_CHECKING:
    from ml.detector import Detector
    from ml.inference import BatchPredictor

logger = logging.getLogger(__name__)


# A random detector has no threshold of its own worth keeping (its checkpoint-less info says 0).
UNTRAINED_THRESHOLD = 0.5


class NoModelError(RuntimeError):
    """Nothing to run: no active version, no TRASHMAP_WEIGHTS, no --untrained."""


class ModelLoader:
    """Loads and caches this process's detectors; `resolve()` is called between batches."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        untrained: bool,
        pinned: bool,
        cache_size: int = 2,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.untrained = untrained
        self.pinned = pinned and settings.weights is not None
        self.cache_size = max(1, cache_size)
        self.current: Model | None = None
        # What photos are decoded for (see decode); None = at native resolution.
        self.decode_target: tuple[int, int] | None = None
        self.device: str = "cpu"
        self._cache: OrderedDict[int, Model] = OrderedDict()
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def start(self) -> Model:
        """Load the model this worker begins with (raises NoModelError when there is none)."""
        weights_ref = None
        if self.settings.weights is not None:
            with session_scope(self.sessions) as session:
                row, _ = register_row(session, self.settings.weights)
                if not self.pinned and active_version(session) is None:
                    activate(session, row)
                weights_ref = ref_of(row)
        if self.pinned and weights_ref is not None:
            return self._switch(self._load(weights_ref))
        with self.sessions() as session:
            active = active_version(session)
        if active is not None:
            return self._switch(self._load(active))
        if self.untrained:
            return self._switch(self._untrained())
        raise NoModelError(
            "no model version is active: run `trashmap models register CHECKPOINT --activate`, "
            "set TRASHMAP_WEIGHTS, or pass --untrained for a random detector"
        )

    def resolve(self, version_id: int | None) -> Model:
        """The model for a photo: a requested version, else the active one (checked when due)."""
        with self._lock:
            if version_id is None:
                self._follow_active()
                assert self.current is not None, "start() loads a model first"
                return self.current
            if self.current is not None and version_id == self.current.version_id:
                return self.current
            if version_id in self._cache:
                self._cache.move_to_end(version_id)
                return self._cache[version_id]
            with self.sessions() as session:
                row = session.get(ModelVersion, version_id)
                if row is None:
                    raise VersionError(f"model version {version_id} does not exist")
                ref = ref_of(row)
            return self._load(ref)

    def _follow_active(self) -> None:
        if self.pinned or time.monotonic() - self._checked_at < self.settings.model_check_s:
            return
        self._checked_at = time.monotonic()
        with self.sessions() as session:
            active = active_version(session)
        if active is None or (self.current and active.id == self.current.version_id):
            return
        try:
            model = self._cache.get(active.id) or self._load(active)
        except Exception:
            # Keep serving with the current model; the next check tries again.
            logger.exception(
                "cannot load newly active version %s; keeping the current one", active.label
            )
            return
        logger.info("switching to newly active model version %s (%s)", active.id, active.label)
        metrics.MODEL_SWITCHES.inc()
        self._switch(model)

    def decode(self, data: bytes, version_id: int | None = None) -> tuple[Image.Image, float]:
        """Upright photo at the smallest size its model can use, and the factor back: the
        requested version's model (a reprocessing run), else the current one.

        Draft decoding (TRASHMAP_DRAFT_DECODE) stops at DRAFT_HEADROOM x the model's input
        size; a model that slices gets the native pixels its tiles are cut from.
        """
        target = self.decode_target
        if version_id is not None and (
            self.current is None or version_id != self.current.version_id
        ):
            with self._lock:
                model = self._cache.get(version_id)
            # Not loaded yet: native pixels suit any model, and loading is the batch's job
            # (a slow load must not fail the photo as a slow decode).
            target = self._decode_target(model) if model is not None else None
        return decode_oriented(data, target=target)

    def _decode_target(self, model: Model) -> tuple[int, int] | None:
        predictor = _batch_predictor(model)
        draft = self.settings.draft_decode and not predictor.slicing.enabled
        return predictor.detector.input_size if draft else None

    def _switch(self, model: Model) -> Model:
        self.current = model
        self.decode_target = self._decode_target(model)
        metrics.set_model(model.version_id, model.label)
        return model

    def _load(self, ref: VersionRef) -> Model:
        from ml.detector import Detector

        if ref.checkpoint is None:
            raise VersionError(f"model version {ref.label} has no checkpoint file on record")
        detector = Detector.from_checkpoint(
            ref.checkpoint,
            self.settings.device,
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
        )
        if ref.weights_sha256 and detector.weights_sha256 != ref.weights_sha256:
            raise VersionError(
                f"{ref.checkpoint} no longer holds the weights registered as {ref.label} "
                "(its sha256 changed); register the new file as a new version"
            )
        return self._remember(ref.id, ref.label, detector, detector.info.score_threshold)

    def _untrained(self) -> Model:
        from ml.detector import Detector

        s = self.settings
        detector = Detector.untrained(
            [f"class_{i}" for i in range(1, s.untrained_classes + 1)],
            s.untrained_arch,
            s.device if s.device != "auto" else "cpu",
            min_size=s.min_size or 800,
            max_size=s.max_size or 1333,
        )
        logger.warning(
            "RUNNING AN UNTRAINED DETECTOR (%s): its detections are random and mean nothing",
            s.untrained_arch,
        )
        version_id = register_untrained(self.sessions, detector)
        label = f"{detector.info.name}:{detector.info.version}"
        return self._remember(version_id, label, detector, UNTRAINED_THRESHOLD)

    def _remember(
        self, version_id: int, label: str, detector: Detector, own_threshold: float
    ) -> Model:
        """Cache a loaded detector; TRASHMAP_SCORE_THRESHOLD, when set, overrides its own."""
        from ml.inference import BatchPredictor
        from ml.slicing import stored_slicing

        s = self.settings
        predictor = BatchPredictor(
            detector,
            max_batch=s.batch_size,
            precision=s.precision,
            compile_model=s.compile_model,
            slicing=stored_slicing(detector.info.slicing, s.slice_size, s.slice_overlap),
        )
        self.device = str(detector.device)
        threshold = self.settings.score_threshold
        model = Model(
            version_id, label, predictor, own_threshold if threshold is None else threshold
        )
        self._cache[version_id] = model
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        logger.info(
            "loaded model version %s (%s) on %s, %s, score threshold %s, slicing %s",
            version_id,
            label,
            detector.device,
            predictor.precision,
            model.score_threshold,
            describe_slicing(model),
        )
        return model


def _batch_predictor(model: Model) -> BatchPredictor:
    # The loader builds every Model's predictor (the batcher needs only its predict()).
    return cast("BatchPredictor", model.predictor)


def describe_slicing(model: Model) -> str:
    """The slice settings `model` runs with, for log lines: 'off' or '512 px tiles, ...'."""
    return _batch_predictor(model).slicing.describe()


def register_untrained(sessions: sessionmaker[Session], detector: Detector) -> int:
    """The model_versions row of a random detector (never activated: it has no file).

    Its metrics say `"untrained": true`, which the API, the map and the CLI show.
    """
    info = detector.info
    metrics = {**(info.metrics or {}), UNTRAINED_KEY: True}
    for attempt in range(2):
        try:
            with session_scope(sessions) as session:
                row = session.scalar(
                    select(ModelVersion).where(
                        ModelVersion.name == info.name, ModelVersion.version == info.version
                    )
                )
                if row is None:
                    row = ModelVersion(
                        name=info.name,
                        version=info.version,
                        arch=info.arch,
                        weights_sha256=detector.weights_sha256,
                        class_names=list(info.class_names),
                        metrics=metrics,
                    )
                    session.add(row)
                    session.flush()
                elif not row.untrained:  # a row registered before untrained rows were marked
                    row.metrics = {**(row.metrics or {}), **metrics}
                return row.id
        except IntegrityError:
            # Workers started together insert the same row; the loser reads the winner's.
            if attempt:
                raise
    raise AssertionError("unreachable")
