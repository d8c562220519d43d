"""Verified annotations: a reviewer's set of boxes per photo, checked, stored and read back.

Sets are only added, never changed: a photo's newest set is its current one and the
others are the audit trail. Everything here is Flask-free; the review API and the dataset
export share it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from trashmap.models import (
    AnnotationBox,
    AnnotationSet,
    ApiKey,
    Detection,
    ModelVersion,
    Photo,
    PhotoStatus,
    utcnow,
)
from trashmap.taxonomy import known_labels

# Most boxes one set may hold (TACO's busiest image has under 100).
MAX_BOXES = 1000
# The review queue ranks at most this many of the newest unreviewed photos.
QUEUE_CANDIDATES = 2000
# Two versions' boxes are the same object at this IoU or more.
MATCH_IOU = 0.5
_BODY_KEYS = {"annotations", "no_litter"}
_BOX_KEYS = {"label", "bbox"}


class AnnotationError(ValueError):
    """A submitted set is malformed; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Box:
    """A labelled box in oriented pixels, x1 < x2 and y1 < y2."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def bbox(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def key(self) -> tuple[str, float, float, float, float]:
        """What makes two boxes the same, to 1/100 pixel (the precision the API prints)."""
        return (self.label, *(round(v, 2) for v in self.bbox))  # type: ignore[return-value]


def allowed_labels(session: Session) -> frozenset[str]:
    """TACO's names, the shipped class sets, and the classes of every registered version."""
    names = set(known_labels())
    for class_names in session.scalars(sa.select(ModelVersion.class_names)):
        names.update(str(n) for n in class_names or [])
    return frozenset(names)


def parse_set(body: Any, width: int, height: int, labels: frozenset[str]) -> tuple[list[Box], bool]:
    """The boxes and the no-litter flag of a PUT body, or AnnotationError saying what is wrong."""
    if not isinstance(body, Mapping):
        raise AnnotationError("invalid_body", 'send a JSON object {"annotations": [...]}')
    extra = sorted(set(body) - _BODY_KEYS)
    if extra:
        raise AnnotationError("unknown_field", f"unexpected field(s): {', '.join(extra)}")
    items = body.get("annotations")
    no_litter = body.get("no_litter", False)
    if not isinstance(items, list):
        raise AnnotationError("invalid_annotations", "annotations must be a list")
    if not isinstance(no_litter, bool):
        raise AnnotationError("invalid_no_litter", "no_litter must be true or false")
    if len(items) > MAX_BOXES:
        raise AnnotationError("too_many_boxes", f"a set holds at most {MAX_BOXES} boxes")
    if no_litter and items:
        raise AnnotationError("invalid_no_litter", "a no-litter set cannot hold boxes")
    if not no_litter and not items:
        raise AnnotationError(
            "empty_set", 'a set without boxes must say "no_litter": true (nothing to see)'
        )
    boxes = [_parse_box(i, item, width, height, labels) for i, item in enumerate(items)]
    return boxes, no_litter


def _parse_box(index: int, item: Any, width: int, height: int, labels: frozenset[str]) -> Box:
    where = f"annotations[{index}]"
    if not isinstance(item, Mapping):
        raise AnnotationError("invalid_annotation", f'{where} must be {{"label", "bbox"}}')
    extra = sorted(set(item) - _BOX_KEYS)
    if extra:
        raise AnnotationError("unknown_field", f"{where}: unexpected field(s) {', '.join(extra)}")
    label, bbox = item.get("label"), item.get("bbox")
    if not isinstance(label, str) or label not in labels:
        raise AnnotationError(
            "invalid_label",
            f"{where}: label {label!r} is not in the class set (TACO categories, "
            "supercategories, the shipped class sets, registered models' classes)",
        )
    values: list[float] = []
    numeric = isinstance(bbox, list) and len(bbox) == 4
    if numeric and all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox):  # type: ignore[union-attr]
        try:
            values = [float(v) for v in bbox]  # type: ignore[union-attr]
        except OverflowError:  # an integer beyond any float
            values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise AnnotationError("invalid_bbox", f"{where}: bbox must be [x1, y1, x2, y2] numbers")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise AnnotationError(
            "bbox_outside_photo",
            f"{where}: bbox must satisfy 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}"
            " (pixels of the upright photo)",
        )
    return Box(label, x1, y1, x2, y2)


def current_set(session: Session, photo_id: int) -> AnnotationSet | None:
    return session.scalar(
        sa.select(AnnotationSet)
        .where(AnnotationSet.photo_id == photo_id)
        .order_by(AnnotationSet.id.desc())
        .limit(1)
    )


def history(session: Session, photo_id: int) -> list[AnnotationSet]:
    """Every set of the photo, newest (the current one) first."""
    return list(
        session.scalars(
            sa.select(AnnotationSet)
            .where(AnnotationSet.photo_id == photo_id)
            .order_by(AnnotationSet.id.desc())
        )
    )


def boxes_of(annotation_set: AnnotationSet) -> list[Box]:
    return [Box(b.label, b.x1, b.y1, b.x2, b.y2) for b in annotation_set.boxes]


def save_set(
    session: Session, photo: Photo, boxes: Sequence[Box], no_litter: bool, key: ApiKey
) -> tuple[AnnotationSet, bool]:
    """Store the set as the photo's current one (committed); returns (set, created).

    The same set as the current one adds nothing, so repeating a PUT changes nothing.
    """
    latest = current_set(session, photo.id)
    if (
        latest is not None
        and latest.no_litter == no_litter
        and sorted(b.key() for b in boxes_of(latest)) == sorted(b.key() for b in boxes)
    ):
        return latest, False
    row = AnnotationSet(
        photo_id=photo.id,
        no_litter=no_litter,
        reviewed_by=key.name,
        api_key_id=key.id,
        reviewed_at=utcnow(),
        boxes=[AnnotationBox(label=b.label, x1=b.x1, y1=b.y1, x2=b.x2, y2=b.y2) for b in boxes],
    )
    session.add(row)
    session.commit()
    return row, True


def set_json(annotation_set: AnnotationSet) -> dict[str, Any]:
    return {
        "id": annotation_set.id,
        "no_litter": annotation_set.no_litter,
        "annotations": [
            {"label": b.label, "bbox": [round(v, 2) for v in b.bbox]}
            for b in boxes_of(annotation_set)
        ],
        "by": annotation_set.reviewed_by,
        "reviewed_at": _iso(annotation_set.reviewed_at),
    }


def review_json(annotation_set: AnnotationSet | None) -> dict[str, Any]:
    """The `review` member of a photo's JSON."""
    if annotation_set is None:
        return {"status": "unreviewed", "reviewed_at": None, "by": None}
    return {
        "status": "verified",
        "reviewed_at": _iso(annotation_set.reviewed_at),
        "by": annotation_set.reviewed_by,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def verified_term(photo_id: Any) -> ColumnElement[bool]:
    """True for photos with a verified set (any set: the newest is never taken back)."""
    s = AnnotationSet.__table__.c
    return sa.exists().where(s.photo_id == photo_id)


def current_sets_query() -> sa.Select[AnnotationSet]:
    """Each verified photo's current set, by photo id."""
    s = AnnotationSet.__table__.c
    newest = sa.select(sa.func.max(s.id)).group_by(s.photo_id).scalar_subquery()
    return (
        sa.select(AnnotationSet)
        .where(AnnotationSet.id.in_(newest))
        .order_by(AnnotationSet.photo_id)
    )


# --- the review queue -------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueEntry:
    """An unreviewed photo, how much reviewing it would teach the model, and why."""

    photo: Photo
    detections: list[Detection]  # the photo's current version's, best score first
    priority: float
    uncertainty: float
    disagreement: float
    rarity: float

    def reasons(self) -> dict[str, float]:
        return {
            "priority": round(self.priority, 4),
            "uncertainty": round(self.uncertainty, 4),
            "disagreement": round(self.disagreement, 4),
            "rarity": round(self.rarity, 4),
        }


def review_queue(
    session: Session, conditions: Iterable[ColumnElement[bool]], limit: int
) -> list[QueueEntry]:
    """Unreviewed done photos matching `conditions`, most informative first.

    The QUEUE_CANDIDATES newest candidates are ranked by
    priority = uncertainty + disagreement + rarity, each within 0..1 (docs/map-api.md):
    uncertainty = 1 - mean(|score - 0.5| * 2) over the current version's detections;
    disagreement = the share of boxes two versions do not agree on (IoU >= 0.5, same
    label), averaged over the other versions that ran on the photo; rarity =
    1 / (1 + verified boxes carrying the label of the photo's best detection).
    Ties go to the newest photo.
    """
    p = Photo.__table__.c
    photos = list(
        session.scalars(
            sa.select(Photo)
            .where(p.status == PhotoStatus.done.value, ~verified_term(p.id), *conditions)
            .order_by(p.id.desc())
            .limit(QUEUE_CANDIDATES)
        )
    )
    if not photos:
        return []
    by_photo: dict[int, dict[int, list[Detection]]] = defaultdict(lambda: defaultdict(list))
    ids = [photo.id for photo in photos]
    for start in range(0, len(ids), 500):  # bounded IN lists
        for det in session.scalars(
            sa.select(Detection)
            .where(Detection.photo_id.in_(ids[start : start + 500]))
            .order_by(Detection.score.desc(), Detection.id)
        ):
            by_photo[det.photo_id][det.model_version_id].append(det)
    verified_counts = _verified_label_counts(session)
    entries = []
    for photo in photos:
        runs = by_photo.get(photo.id, {})
        current = runs.get(photo.model_version_id or -1, [])
        others = [dets for version, dets in runs.items() if version != photo.model_version_id]
        uncertainty = (
            1 - sum(abs(d.score - 0.5) * 2 for d in current) / len(current) if current else 0.0
        )
        disagreement = (
            sum(_disagreement(current, other) for other in others) / len(others) if others else 0.0
        )
        rarity = 1 / (1 + verified_counts[current[0].label]) if current else 0.0
        entries.append(
            QueueEntry(
                photo,
                current,
                uncertainty + disagreement + rarity,
                uncertainty,
                disagreement,
                rarity,
            )
        )
    entries.sort(key=lambda e: (-e.priority, -e.photo.id))
    return entries[:limit]


def _verified_label_counts(session: Session) -> Counter[str]:
    """Boxes per label over the current sets: what the training set already has plenty of."""
    b, s = AnnotationBox.__table__.c, AnnotationSet.__table__.c
    newest = sa.select(sa.func.max(s.id)).group_by(s.photo_id).scalar_subquery()
    rows = session.execute(
        sa.select(b.label, sa.func.count()).where(b.set_id.in_(newest)).group_by(b.label)
    )
    return Counter({label: n for label, n in rows})


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _disagreement(mine: Sequence[Detection], theirs: Sequence[Detection]) -> float:
    """Share of both versions' boxes left without a same-label partner (greedy IoU match)."""
    total = len(mine) + len(theirs)
    if total == 0:
        return 0.0
    free = list(theirs)
    agreed = 0
    for det in mine:
        box = (det.x1, det.y1, det.x2, det.y2)
        best, best_iou = None, MATCH_IOU
        for other in free:
            overlap = iou(box, (other.x1, other.y1, other.x2, other.y2))
            if overlap >= best_iou:
                best, best_iou = other, overlap
        if best is not None:
            free.remove(best)
            agreed += 2 if best.label == det.label else 0
    return 1 - agreed / total
