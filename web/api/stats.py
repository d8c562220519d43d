"""GET /api/v1/stats (staff, scope read:stats): totals, counts by label and by period."""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify, request
from sqlalchemy.orm import Session

from trashmap.models import Detection, Photo
from trashmap.taxonomy import supercategory_of
from web.auth import require_scope
from web.context import db
from web.errors import ApiError
from web.query.features import count_matching, is_postgis
from web.query.filters import MapFilter

bp = Blueprint("stats", __name__)
PERIODS = ("day", "week", "month")
_d, _p = Detection.__table__.c, Photo.__table__.c


def period_start(session: Session, period: str) -> sa.ColumnElement[str]:
    """The first day (YYYY-MM-DD) of the day/ISO week (Monday)/month holding taken_at."""
    if is_postgis(session):
        return sa.func.to_char(sa.func.date_trunc(period, _p.taken_at), "YYYY-MM-DD")
    if period == "day":
        return sa.func.date(_p.taken_at)
    if period == "week":
        # Back six days, then forward to the next Monday: the Monday on or before the day.
        return sa.func.date(_p.taken_at, "-6 days", "weekday 1")
    return sa.func.strftime("%Y-%m-01", _p.taken_at)


def review_counts(session: Session, flt: MapFilter) -> dict[str, int]:
    """Matching photos a reviewer verified, and those not yet reviewed."""
    counts = {}
    for state, verified in (("verified", True), ("unreviewed", False)):
        wanted = flt.verified is None or flt.verified == verified
        narrowed = dataclasses.replace(flt, verified=verified)
        counts[state] = count_matching(session, "photos", narrowed) if wanted else 0
    return counts


def compute_stats(session: Session, flt: MapFilter, period: str) -> dict[str, Any]:
    """Everything counted with the same filters as GET /detections and GET /photos."""
    conditions = flt.detection_conditions(is_postgis(session))
    source = Detection.__table__.join(Photo.__table__, _d.photo_id == _p.id)
    count = sa.func.count().label("n")
    by_label = session.execute(
        sa.select(_d.label, count)
        .select_from(source)
        .where(*conditions)
        .group_by(_d.label)
        .order_by(count.desc(), _d.label)
    ).all()
    bucket = period_start(session, period).label("start")
    by_period = session.execute(
        sa.select(bucket, count)
        .select_from(source)
        .where(*conditions, _p.taken_at.is_not(None))
        .group_by(bucket)
        .order_by(bucket)
    ).all()
    supercats: dict[str, int] = {}
    for row in by_label:
        name = supercategory_of(row.label) or "Unknown"
        supercats[name] = supercats.get(name, 0) + row.n
    total = sum(row.n for row in by_label)
    dated = sum(row.n for row in by_period)
    return {
        "detections": total,
        "photos": count_matching(session, "photos", flt),
        "review": review_counts(session, flt),
        "by_label": [
            {"label": r.label, "supercategory": supercategory_of(r.label), "count": r.n}
            for r in by_label
        ],
        "by_supercategory": [
            {"supercategory": k, "count": v}
            for k, v in sorted(supercats.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "by_period": {
            "period": period,
            "undated": total - dated,
            "buckets": [{"start": str(r.start), "count": r.n} for r in by_period],
        },
    }


@bp.get("/stats")
@require_scope("read:stats")
def stats():  # type: ignore[no-untyped-def]
    """Totals and breakdowns for the filters; `period` = day (default), week or month."""
    period = request.args.get("period", "day")  # `period=` is a 400
    if period not in PERIODS:
        raise ApiError(400, "invalid_period", f"period must be one of {', '.join(PERIODS)}")
    return jsonify(compute_stats(db(), MapFilter.from_args(request.args), period))
