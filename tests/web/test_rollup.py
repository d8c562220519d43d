"""The grid-count rollup (PostgreSQL triggers + folds) always gives the direct counts."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import threading
from collections import Counter

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.datastructures import MultiDict

from tests.web.conftest import LABELS, _model
from trashmap.db import session_scope
from trashmap.models import Detection, Photo
from trashmap.rollup import fold, fold_quietly
from web.api.grid import cell_for_zoom, direct_cell_counts
from web.query import rollup
from web.query.filters import MapFilter

STATE = sa.text("""
    SELECT level, cx, cy, label, model_version_id, score_bin, sum(n) AS n
    FROM (SELECT * FROM grid_counts UNION ALL SELECT * FROM grid_count_deltas) AS t
    GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(n) <> 0""")
CENTRES = [(48.8566, 2.3522), (-33.8688, 151.2093), (0.0, 0.0), (64.1, -21.9)]


def _positions(rng: random.Random, n: int) -> list[tuple[float | None, float | None]]:
    """Clustered points, points anywhere, on cell edges, on the world's edges, and none."""
    out: list[tuple[float | None, float | None]] = []
    for i in range(n):
        kind = i % 10
        if kind < 6:
            lat0, lon0 = CENTRES[i % len(CENTRES)]
            out.append(
                (
                    max(-90.0, min(90.0, rng.gauss(lat0, 0.3))),
                    max(-180.0, min(180.0, rng.gauss(lon0, 0.3))),
                )
            )
        elif kind < 8:
            out.append((rng.uniform(-90, 90), rng.uniform(-180, 180)))
        elif kind == 8:  # exactly on the edge of a cell of some level
            level = rng.randrange(0, rollup.MAX_LEVEL + 1)
            cell = rollup.cell_of(level)
            lat_steps, lon_steps = int(90 // cell), int(180 // cell)
            out.append(
                (
                    rng.randint(-lat_steps, lat_steps) * cell,
                    rng.randint(-lon_steps, lon_steps) * cell,
                )
            )
        else:
            out.append(rng.choice([(None, None), (90.0, 180.0), (-90.0, -180.0), (0.0, 180.0)]))
    return out


def add_photos(sessions: sessionmaker[Session], rng: random.Random, n: int, tag: str) -> list[int]:
    """n photos, each with 0-4 detections of two model versions, in one INSERT each."""
    with session_scope(sessions) as session:
        models = [_model(session, "seed", "1").id, _model(session, "seed", "2").id]
        positions = _positions(rng, n)
        ids = session.scalars(
            sa.insert(Photo).returning(Photo.id),
            [
                {
                    "sha256": hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(),
                    "content_type": "image/jpeg",
                    "byte_size": 1,
                    "width": 640,
                    "height": 480,
                    "lat": lat,
                    "lon": lon,
                    "status": "done",
                    "warnings": [],
                    "attempts": 0,
                }
                for i, (lat, lon) in enumerate(positions)
            ],
        ).all()
        rows = [
            {
                "photo_id": pid,
                "model_version_id": rng.choice(models),
                "label": rng.choice(LABELS),
                "score": rng.choice([rng.random(), 0.5, 0.1, 0.9, 0.0, 1.0]),
                "x1": 0.0,
                "y1": 0.0,
                "x2": 1.0,
                "y2": 1.0,
                "lat": lat,
                "lon": lon,
            }
            for pid, (lat, lon) in zip(ids, positions, strict=True)
            for _ in range(rng.randrange(0, 5))
        ]
        if rows:
            session.execute(sa.insert(Detection), rows)
    return list(ids)


def expected_state(session: Session) -> Counter[tuple[object, ...]]:
    """The rollup computed in Python from the detections themselves."""
    out: Counter[tuple[object, ...]] = Counter()
    d = Detection.__table__.c
    for lat, lon, label, mv, score in session.execute(
        sa.select(d.lat, d.lon, d.label, d.model_version_id, d.score)
    ):
        if lat is None or lon is None:
            continue
        score_bin = bisect.bisect_right(rollup.SCORE_THRESHOLDS, score)
        for level in range(rollup.MAX_LEVEL + 1):
            cell = rollup.cell_of(level)
            out[(level, math.floor(lon / cell), math.floor(lat / cell), label, mv, score_bin)] += 1
    return out


def rollup_state(session: Session) -> Counter[tuple[object, ...]]:
    return Counter({tuple(row[:6]): int(row.n) for row in session.execute(STATE)})


def assert_exact(sessions: sessionmaker[Session]) -> int:
    with session_scope(sessions) as session:
        expected = expected_state(session)
        assert rollup_state(session) == expected
    return sum(expected.values())


@pytest.fixture
def populated(pg_sessions) -> sessionmaker[Session]:  # type: ignore[no-untyped-def]
    add_photos(pg_sessions, random.Random(11), 1500, "bulk")
    with session_scope(pg_sessions) as session:
        fold(session)
    return pg_sessions


def _cases(rng: random.Random) -> list[tuple[dict[str, str], int]]:
    cases = [
        ({}, 0),
        ({}, 2),
        ({}, 5),
        ({"bbox": "-180,-90,180,90"}, 3),
        ({"label": LABELS[1], "min_score": "0.5"}, 4),
        ({"supercategory": "Bottle", "model_version": "seed:2"}, 6),
        ({"bbox": "1.5,48,3.5,49.6", "min_score": "0.1"}, 6),
        ({"bbox": "1.5,48,3.5,49.6"}, 3),  # a small box at a coarse zoom: finer source
        ({"bbox": "-1,-1,1,1", "min_score": "0.9"}, 8),
    ]
    for _ in range(30):
        west, south = rng.uniform(-180, 170), rng.uniform(-90, 80)
        east = min(180.0, west + rng.choice([0.8, 3, 20, 90]))
        north = min(90.0, south + rng.choice([0.8, 3, 20, 60]))
        query = {"bbox": f"{west},{south},{east},{north}"}
        if rng.random() < 0.3:
            query["label"] = rng.choice(LABELS)
        if rng.random() < 0.3:
            query["min_score"] = rng.choice(["0.2", "0.5", "0.7"])
        cases.append((query, rng.randrange(0, rollup.MAX_LEVEL + 1)))
    return cases


def test_grid_from_the_rollup_equals_the_direct_count(populated) -> None:  # type: ignore[no-untyped-def]
    served = nonempty = 0
    with session_scope(populated) as session:
        for query, zoom in _cases(random.Random(5)):
            flt, cell = MapFilter.from_args(MultiDict(query)), cell_for_zoom(zoom)
            source = rollup.source_level(flt, cell)
            if source is None:
                continue
            served += 1
            fast = [
                tuple(map(int, r)) for r in rollup.cell_counts(session, flt, cell, source, 100_001)
            ]
            direct = [tuple(map(int, r)) for r in direct_cell_counts(session, flt, cell)]
            assert fast == direct, (query, zoom)
            nonempty += bool(direct)
    assert served >= 25 and nonempty >= 15  # the rollup answered, and found detections


def test_filters_the_rollup_cannot_answer_fall_back(populated, client) -> None:  # type: ignore[no-untyped-def]
    for query in [
        {"since": "2024-01-01"},
        {"near": "48.85,2.35", "radius_m": "5000"},
        {"min_score": "0.55"},
    ]:
        assert rollup.source_level(MapFilter.from_args(MultiDict(query)), 1.0) is None
    assert rollup.source_level(MapFilter(), cell_for_zoom(rollup.MAX_LEVEL + 1)) is None
    body = client.get("/api/v1/grid", query_string={"zoom": 3, "min_score": "0.55"}).get_json()
    with session_scope(populated) as session:
        d = Detection.__table__.c
        expected = session.scalar(
            sa.select(sa.func.count()).where(d.lat.is_not(None), d.score >= 0.55)
        )
    assert body["total"] == expected > 0


def test_every_kind_of_write_keeps_the_rollup_exact(populated) -> None:  # type: ignore[no-untyped-def]
    assert assert_exact(populated) > 1000
    with session_scope(populated) as session:
        photo_ids = list(session.scalars(sa.select(Photo.id).order_by(Photo.id)))
        # a photo deleted: its detections go by ON DELETE CASCADE
        session.execute(sa.delete(Photo).where(Photo.id.in_(photo_ids[:40])))
    assert_exact(populated)
    with session_scope(populated) as session:  # edits of label, score and position
        d = Detection.__table__.c
        session.execute(
            sa.update(Detection)
            .where(d.id % 7 == 0)
            .values(label=LABELS[0], score=0.95, lat=d.lat * 0.5)
        )
        session.execute(sa.update(Detection).where(d.id % 11 == 0).values(lat=None))
    assert_exact(populated)
    add_photos(populated, random.Random(12), 200, "late")  # unfolded deltas count too
    total = assert_exact(populated)
    with session_scope(populated) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM grid_count_deltas")) > 0
        assert fold(session) > 0
    with session_scope(populated) as session:
        assert session.scalar(sa.text("SELECT count(*) FROM grid_count_deltas")) == 0
        assert session.scalar(sa.text("SELECT count(*) FROM grid_counts WHERE n <= 0")) == 0
    assert assert_exact(populated) == total
    with session_scope(populated) as session:
        session.execute(sa.text("TRUNCATE detections"))
    with session_scope(populated) as session:
        assert rollup_state(session) == Counter()
        assert session.scalar(sa.text("SELECT count(*) FROM grid_counts")) == 0


def test_concurrent_writers_and_folds_stay_exact(populated) -> None:  # type: ignore[no-untyped-def]
    """Workers replace detections of photos in the same cells while others fold."""
    with session_scope(populated) as session:
        photos = list(
            session.execute(
                sa.select(Photo.id, Photo.lat, Photo.lon)
                .where(Photo.lat.is_not(None))
                .order_by(Photo.id)
            )
        )
        model_id = _model(session, "seed", "1").id
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for photo in photos[worker::4][:25]:
                with session_scope(populated) as session:
                    d = Detection.__table__.c
                    session.execute(
                        sa.delete(Detection).where(
                            d.photo_id == photo.id, d.model_version_id == model_id
                        )
                    )
                    session.execute(
                        sa.insert(Detection),
                        [
                            {
                                "photo_id": photo.id,
                                "model_version_id": model_id,
                                "label": rng.choice(LABELS),
                                "score": rng.random(),
                                "x1": 0.0,
                                "y1": 0.0,
                                "x2": 1.0,
                                "y2": 1.0,
                                "lat": photo.lat,
                                "lon": photo.lon,
                            }
                            for _ in range(rng.randrange(1, 6))
                        ],
                    )
                fold_quietly(populated)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert assert_exact(populated) > 0


def test_a_bbox_edge_point_counts_on_both_sides_of_the_rollup(pg_sessions, client) -> None:  # type: ignore[no-untyped-def]
    """Points exactly on a bbox's edge are inside it, in pages and in the grid alike."""
    with session_scope(pg_sessions) as session:
        model_id = _model(session, "seed", "1").id
        for i, (lat, lon) in enumerate(
            [(10.0, 20.0), (10.0, 30.0), (15.0, 25.0), (9.999999, 25.0)]
        ):
            photo = Photo(
                sha256=hashlib.sha256(f"edge-{i}".encode()).hexdigest(),
                content_type="image/jpeg",
                byte_size=1,
                width=10,
                height=10,
                lat=lat,
                lon=lon,
                status="done",
                warnings=[],
            )
            session.add(photo)
            session.flush()
            session.add(
                Detection(
                    photo_id=photo.id,
                    model_version_id=model_id,
                    label=LABELS[0],
                    score=0.5,
                    x1=0,
                    y1=0,
                    x2=1,
                    y2=1,
                    lat=lat,
                    lon=lon,
                )
            )
    query = {"bbox": "20,10,30,15"}
    page = client.get("/api/v1/detections", query_string=query).get_json()
    assert sorted(f["geometry"]["coordinates"] for f in page["features"]) == [
        [20.0, 10.0],
        [25.0, 15.0],
        [30.0, 10.0],
    ]
    grid = client.get("/api/v1/grid", query_string={**query, "zoom": 6}).get_json()
    assert page["numberMatched"] == grid["total"] == 3
