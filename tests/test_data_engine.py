"""The data engine end to end: upload, detect, review, export, train, register, reprocess the
verified photos with the new version, and score both versions on them.

Real PostgreSQL, Redis and a worker process; one epoch of a tiny detector on CPU.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from tests.conftest import (
    PHOTOS_DIR,
    REDIS_URL,
    WorkerProcess,
    post_photo,
    settings_env,
    wait_for_status,
)
from tests.web.conftest import make_token
from trashmap.cli import cli
from trashmap.db import session_scope
from trashmap.models import Detection, ModelVersion, Photo

pytestmark = pytest.mark.slow
coco_api = pytest.importorskip("pycocotools.coco", reason="pip install pycocotools")

PHOTOS = [
    "exifsamples__jpg_gps_DSCN0010.jpg",
    "exifsamples__jpg_gps_DSCN0012.jpg",
    "exifsamples__jpg_orientation_landscape_6.jpg",  # EXIF-rotated: boxes in the upright frame
    "exifsamples__jpg_gps_DSCN0021.jpg",  # left unreviewed
]
# tests/ml/conftest.py's fast CPU configuration, as `trashmap ml train` flags.
TRAIN_FLAGS = [
    "--model", "fasterrcnn_mobilenet_v3_large_fpn",
    "--weights", "none",
    "--min-size", "144",
    "--max-size", "192",
    "--optimizer", "sgd",
    "--lr", "0.02",
    "--rois-per-image", "32",
    "--rpn-proposals", "150",
    "--batch-size", "2",
    "--epochs", "1",
    "--val-fraction", "0",
    "--val-images", "0",
    "--workers", "0",
    "--threads", "2",
    "--no-progress",
    "--no-tensorboard",
    "--score-threshold", "0",
    "--classes", "all",
]  # fmt: skip


def _cli(settings, *args: str) -> str:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, list(args), env=settings_env(settings))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _usable(detections: list[dict]) -> dict:  # type: ignore[type-arg]
    """The best-scored detection at least 4 px on each side (a random model's can be slivers)."""
    return next(
        d for d in detections if min(d["bbox"][2] - d["bbox"][0], d["bbox"][3] - d["bbox"][1]) >= 4
    )


def _moved(box: list[float], width: int, height: int) -> list[float]:
    """The box shifted by up to 15 px, towards whichever side has room."""
    x1, y1, x2, y2 = box
    dx = min(15.0, width - x2) if width - x2 >= x1 else -min(15.0, x1)
    dy = min(15.0, height - y2) if height - y2 >= y1 else -min(15.0, y1)
    return [x1 + dx, y1 + dy, x2 + dx, y2 + dy]


def test_review_export_train_reprocess_and_compare(  # type: ignore[no-untyped-def]
    client, pg_settings, pg_sessions, tmp_path: Path
) -> None:
    redis.Redis.from_url(REDIS_URL).delete(pg_settings.queue_name)
    worker = WorkerProcess(pg_settings, tmp_path / "worker.log")
    try:
        worker.wait_ready(pg_sessions)
        uploaded = [post_photo(client, PHOTOS_DIR / name).get_json() for name in PHOTOS]
        ids = [photo["id"] for photo in uploaded]
        assert set(wait_for_status(pg_sessions, ids, 300).values()) == {"done"}, worker.log()
        with pg_sessions() as session:
            untrained = session.get(Photo, ids[0]).model_version  # type: ignore[union-attr]
            assert untrained is not None and untrained.untrained
            untrained_id, untrained_ref = untrained.id, untrained.label

        # A reviewer corrects three photos through the API; the fourth stays unreviewed.
        token = make_token(pg_sessions, "review", name="loop-reviewer")
        read_only = make_token(pg_sessions, "read:stats", name="reader")
        queue = client.get("/api/v1/review/queue", headers=_auth(token)).get_json()["photos"]
        assert {p["id"] for p in queue} == set(ids)
        by_id = {p["id"]: p for p in queue}
        assert all(by_id[i]["detections"] for i in ids), "threshold 0: every photo has boxes"
        sets: dict[int, list[dict]] = {}  # type: ignore[type-arg]
        first, second, rotated, _ = (by_id[i] for i in ids)
        w, h = first["width"], first["height"]
        kept = _usable(first["detections"])
        sets[first["id"]] = [  # one box moved, the rest deleted, one drawn
            {"label": kept["label"], "bbox": _moved(kept["bbox"], w, h)},
            {"label": "Cigarette", "bbox": [20.0, 30.0, 180.0, 150.0]},
        ]
        sets[second["id"]] = [  # relabelled, kept where the model put it
            {"label": "Drink can", "bbox": _usable(second["detections"])["bbox"]},
            {"label": "Cigarette", "bbox": [200.0, 100.0, 330.0, 260.0]},
        ]
        for photo_id, boxes in sets.items():
            denied = client.put(
                f"/api/v1/photos/{photo_id}/annotations",
                json={"annotations": boxes},
                headers=_auth(read_only),
            )
            assert denied.status_code == 403  # a read key cannot review
            stored = client.put(
                f"/api/v1/photos/{photo_id}/annotations",
                json={"annotations": boxes},
                headers=_auth(token),
            )
            assert stored.status_code == 200, stored.get_json()
        no_litter = client.put(
            f"/api/v1/photos/{rotated['id']}/annotations",
            json={"annotations": [], "no_litter": True},
            headers=_auth(token),
        )
        assert no_litter.status_code == 200
        reviewed = [first["id"], second["id"], rotated["id"]]
        assert [
            p["id"]
            for p in client.get("/api/v1/review/queue", headers=_auth(token)).get_json()["photos"]
        ] == [ids[3]]

        # The export opens in pycocotools and holds exactly the reviewed boxes.
        export_token = make_token(pg_sessions, "export", name="loop-exporter")
        response = client.get("/api/v1/exports/coco", headers=_auth(export_token))
        assert response.status_code == 200
        folder = tmp_path / "export"
        zipfile.ZipFile(io.BytesIO(response.get_data())).extractall(folder)
        coco = coco_api.COCO(str(folder / "annotations.json"))
        assert sorted(coco.getImgIds()) == sorted(reviewed)
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        exported = sorted(
            (a["image_id"], names[a["category_id"]], [round(v, 2) for v in a["bbox"]])
            for a in coco.loadAnns(coco.getAnnIds())
        )
        expected = sorted(
            (pid, box["label"], [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)])
            for pid, boxes in sets.items()
            for box in boxes
            for x1, y1, x2, y2 in [box["bbox"]]
        )
        assert exported == expected
        assert coco.getAnnIds(imgIds=[rotated["id"]]) == []

        # One short epoch on it, as it is; the checkpoint becomes a registered version.
        run = tmp_path / "run"
        _cli(
            pg_settings, "ml", "train",
            "--annotations", str(folder / "annotations.json"),
            "--images", str(folder),
            "--out", str(run),
            "--name", "loop", "--version", "1",
            *TRAIN_FLAGS,
        )  # fmt: skip
        _cli(pg_settings, "models", "register", str(run / "best.pt"))
        with pg_sessions() as session:
            trained = session.scalar(
                sa.select(ModelVersion).where(
                    ModelVersion.name == "loop", ModelVersion.version == "1"
                )
            )
            assert trained is not None
            trained_id = trained.id
            # The export's categories, as the checkpoint learnt them.
            assert set(trained.class_names) >= {"Cigarette", "Drink can", kept["label"]}

        # The new version runs on exactly the verified photos.
        assert "3 photos would be queued" in _cli(
            pg_settings, "reprocess", "--model", str(trained_id), "--verified", "--dry-run"
        )
        assert "queued 3 of 3" in _cli(
            pg_settings, "reprocess", "--model", str(trained_id), "--verified"
        )
        assert set(wait_for_status(pg_sessions, reviewed, 300).values()) == {"done"}, worker.log()
        with pg_sessions() as session:
            for photo_id in reviewed:
                assert session.get(Photo, photo_id).model_version_id == trained_id  # type: ignore[union-attr]
            unreviewed = session.get(Photo, ids[3])
            assert unreviewed is not None and unreviewed.model_version_id == untrained_id
    finally:
        worker.stop()

    # Both versions scored on the verified photos both ran on.
    result = json.loads(_cli(pg_settings, "models", "compare", untrained_ref, "loop:1", "--json"))
    assert result["photos"] == 3 and result["boxes"] == 4 and result["no_litter_photos"] == 1
    assert [v["id"] for v in result["versions"]] == [untrained_id, trained_id]
    for version in result["versions"]:
        assert version["map"] is not None and 0 <= version["map"] <= 1
        assert set(version["per_class_ap"]) >= {"Cigarette", "Drink can"}

    # The scorer's proof: a version whose detections are the verified boxes scores 1.0.
    with session_scope(pg_sessions) as session:
        copy = ModelVersion(
            name="verified-copy", version="1", arch="none", class_names=["Cigarette", "Drink can"]
        )
        session.add(copy)
        session.flush()
        for photo_id, boxes in sets.items():
            for box in boxes:
                x1, y1, x2, y2 = box["bbox"]
                session.add(
                    Detection(
                        photo_id=photo_id, model_version_id=copy.id, label=box["label"],
                        score=1.0, x1=x1, y1=y1, x2=x2, y2=y2,
                    )
                )  # fmt: skip
        # The no-litter photo was run on too, and it found nothing there.
        session.get(Photo, rotated["id"]).model_version_id = copy.id  # type: ignore[union-attr]
        copy_id = copy.id
    stats = make_token(pg_sessions, "read:stats", name="loop-analyst")
    response = client.get(
        f"/api/v1/models/compare?a={copy_id}&b={trained_id}", headers=_auth(stats)
    )
    assert response.status_code == 200, response.get_json()
    exact, other = response.get_json()["versions"]
    assert response.get_json()["photos"] == 3
    assert exact["map"] == pytest.approx(1.0) and exact["map50"] == pytest.approx(1.0)
    assert all(ap == pytest.approx(1.0) for ap in exact["per_class_ap"].values() if ap is not None)
    assert exact["detections"] == 4
    assert other["map"] < 1.0
