"""Photo storage on a folder and on a real S3 server (rclone serve s3): objects, uploads,
gc, check, migrate, the upload -> worker -> /image flow, and an S3 outage mid-upload."""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image

from tests.conftest import (
    PG_URL,
    PHOTOS_DIR,
    REDIS_URL,
    WorkerProcess,
    post_photo,
    wait_for_status,
)
from tests.storage_servers import BUCKET, RcloneS3, start_rclone
from trashmap.cli import cli
from trashmap.ingest import ClientFields, ingest_photo
from trashmap.models import Photo
from trashmap.settings import Settings
from trashmap.storage import (
    CHUNK,
    DatabaseStorage,
    FileStorage,
    PhotoBytesMissing,
    PhotoCorrupted,
    Storage,
    StorageUnavailable,
    check_objects,
    collect_garbage,
    derivative_key,
    get_photo_bytes,
    open_storage_url,
    photo_key,
    put_derivative,
    put_photo_bytes,
    read_original,
    retire_blob_table,
    sha256_of_key,
    staged_upload,
    store_original,
)
from web import create_app

PHOTO = PHOTOS_DIR / "exifsamples__jpg_gps_DSCN0010.jpg"
MAX_PIXELS = 120_000_000


def jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A distinct small JPEG per seed."""
    out = io.BytesIO()
    Image.new("RGB", size, (seed % 256, (seed * 7) % 256, (seed * 13) % 256)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    server = start_rclone(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: RcloneS3, monkeypatch: pytest.MonkeyPatch) -> RcloneS3:
    """boto3 in this process takes its credentials from the environment, as in production."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """An empty storage of each kind."""
    if request.param == "file":
        return FileStorage(tmp_path / "storage")
    server: RcloneS3 = request.getfixturevalue("s3_env")
    return open_storage_url(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", server.endpoint)


def _backend_env(store: Storage, server: RcloneS3 | None) -> dict[str, str]:
    env = {"TRASHMAP_STORAGE_URL": store.url}
    if server is not None:
        env.update({k: v for k, v in server.env().items() if k != "TRASHMAP_STORAGE_URL"})
    return env


def _cli_env(store: Storage, server: RcloneS3 | None, settings: Settings) -> dict[str, str]:
    return {
        "TRASHMAP_DATABASE_URL": PG_URL,
        "TRASHMAP_BROKER_URL": REDIS_URL,
        "TRASHMAP_DATA_DIR": str(settings.data_dir),
        **_backend_env(store, server),
    }


def _server_of(request: pytest.FixtureRequest, store: Storage) -> RcloneS3 | None:
    return request.getfixturevalue("s3_server") if store.url.startswith("s3://") else None


# --- objects ---------------------------------------------------------------------------


def test_objects_round_trip_and_a_missing_one_is_reported(backend: Storage) -> None:
    data = jpeg(1)
    sha256 = put_photo_bytes(backend, data)
    assert backend.exists(photo_key(sha256))
    assert backend.get(photo_key(sha256)) == data
    assert read_original(backend, sha256) == data
    listed = list(backend.list("photos/"))
    assert [(o.key, o.size) for o in listed] == [(f"photos/{sha256[:2]}/{sha256}", len(data))]
    assert sha256_of_key(listed[0].key) == sha256
    backend.delete(photo_key(sha256))
    backend.delete(photo_key(sha256))  # already gone: no error
    assert not backend.exists(photo_key(sha256))
    with pytest.raises(PhotoBytesMissing):
        read_original(backend, sha256)


def test_an_upload_is_streamed_hashed_and_stored_under_its_sha256(backend: Storage) -> None:
    # More than one read chunk, and above the multipart threshold on S3.
    data = os.urandom(17 * CHUNK + 123)
    with staged_upload(backend, io.BytesIO(data)) as staged:
        assert staged.sha256 == hashlib.sha256(data).hexdigest()
        assert staged.size == len(data)
        store_original(backend, staged)
    assert not staged.path.exists()  # moved into place or removed: no spool file is left
    assert backend.get(photo_key(staged.sha256)) == data
    if isinstance(backend, FileStorage):
        # Written as a temporary file and renamed: nothing half-written is left beside it.
        assert list((backend.root / "tmp").iterdir()) == []


def test_a_corrupted_object_is_refused_when_read(backend: Storage) -> None:
    data = jpeg(2)
    sha256 = hashlib.sha256(data).hexdigest()
    backend.put_bytes(photo_key(sha256), data[:-10] + b"0123456789")
    with pytest.raises(PhotoCorrupted, match="corrupted"):
        read_original(backend, sha256)


def test_an_unwritable_folder_is_an_outage_not_a_bug(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    store = FileStorage(blocker / "storage")
    with pytest.raises(StorageUnavailable):
        put_photo_bytes(store, jpeg(3))


# --- gc, check, migrate --------------------------------------------------------------------


def _ingest(sessions, store: Storage, data: bytes) -> Photo:  # type: ignore[no-untyped-def]
    with sessions() as session:
        photo, created = ingest_photo(
            session, io.BytesIO(data), "x.jpg", ClientFields(), MAX_PIXELS, storage=store
        )
        assert created
        return photo


def test_gc_removes_only_objects_that_no_row_points_to(  # type: ignore[no-untyped-def]
    backend: Storage, pg_sessions, pg_engine
) -> None:
    kept = _ingest(pg_sessions, backend, jpeg(10))
    put_derivative(backend, kept.sha256, 256, b"rendition")
    orphan = put_photo_bytes(backend, jpeg(11))  # a crash between the object and the row
    put_derivative(backend, orphan, 256, b"orphan rendition")

    young = collect_garbage(backend, pg_engine, older_than_s=3600)
    assert young.removed == [] and young.kept_recent == 2  # may still be committing

    report = collect_garbage(backend, pg_engine, older_than_s=0)
    assert sorted(report.removed or []) == [derivative_key(orphan, 256), photo_key(orphan)]
    assert backend.exists(photo_key(kept.sha256))
    assert backend.exists(derivative_key(kept.sha256, 256))
    assert not backend.exists(photo_key(orphan))


def test_check_finds_rows_without_their_object(  # type: ignore[no-untyped-def]
    request, backend: Storage, pg_sessions, pg_engine, pg_settings
) -> None:
    photos = [_ingest(pg_sessions, backend, jpeg(20 + i)) for i in range(3)]
    runner = CliRunner()
    env = _cli_env(backend, _server_of(request, backend), pg_settings)
    healthy = runner.invoke(cli, ["storage", "check", "--verify"], env=env)
    assert healthy.exit_code == 0, healthy.output
    assert "3 photos, 0 without usable bytes" in healthy.output

    backend.delete(photo_key(photos[0].sha256))
    backend.put_bytes(photo_key(photos[1].sha256), b"not the uploaded bytes")
    found = {p.photo_id: p.problem for _, p in check_objects(backend, pg_engine, True) if p}
    assert found == {photos[0].id: "missing", photos[1].id: "corrupted"}
    result = runner.invoke(cli, ["storage", "check", "--verify"], env=env)
    assert result.exit_code == 1
    assert f"photo {photos[0].id}: missing" in result.output
    assert f"photo {photos[1].id}: corrupted" in result.output


def _legacy_blobs(engine: sa.Engine, photos: dict[str, bytes]) -> dict[int, bytes]:
    """A deployment from before object storage: rows whose bytes are in photo_blobs."""
    metadata = sa.MetaData()
    blobs = sa.Table(
        "photo_blobs",
        metadata,
        sa.Column("photo_id", sa.ForeignKey("photos.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    sa.Table("photos", metadata, sa.Column("id", sa.Integer, primary_key=True))
    metadata.create_all(engine, tables=[blobs])
    out = {}
    with engine.begin() as conn:
        for name, data in photos.items():
            photo_id = conn.scalar(
                sa.insert(Photo)
                .values(
                    sha256=hashlib.sha256(data).hexdigest(),
                    content_type="image/jpeg",
                    byte_size=len(data),
                    original_filename=name,
                    width=640,
                    height=480,
                    orientation=1,
                    warnings=[],
                    status="done",
                    attempts=0,
                    lease_token=0,
                )
                .returning(Photo.id)
            )
            conn.execute(sa.insert(blobs).values(photo_id=photo_id, data=data))
            out[photo_id] = data
    return out


def test_migrate_moves_database_blobs_verified_and_resumable_then_drops_the_table(  # type: ignore[no-untyped-def]
    request, backend: Storage, pg_sessions, pg_engine, pg_settings
) -> None:
    legacy = _legacy_blobs(pg_engine, {f"old{i}.jpg": jpeg(30 + i) for i in range(3)})
    ids = sorted(legacy)
    # Until they are moved, the old photos are served from the table.
    with pg_sessions() as session:
        assert get_photo_bytes(session, ids[0], backend) == legacy[ids[0]]
    with pg_engine.begin() as conn:
        assert retire_blob_table(conn) == 3  # migration 0008's rule: not while rows remain
    assert DatabaseStorage(pg_engine).present()
    # An interrupted earlier run had copied the first one already.
    put_photo_bytes(backend, legacy[ids[0]])

    env = _cli_env(backend, _server_of(request, backend), pg_settings)
    result = CliRunner().invoke(cli, ["storage", "migrate", "--to", backend.url], env=env)
    assert result.exit_code == 0, result.output
    assert "2 copied, 1 present" in result.output
    assert not DatabaseStorage(pg_engine).present()  # emptied, then dropped
    for photo_id, data in legacy.items():
        with pg_sessions() as session:
            assert get_photo_bytes(session, photo_id, backend) == data
    again = CliRunner().invoke(cli, ["storage", "migrate", "--to", backend.url], env=env)
    assert again.exit_code == 0 and "nothing to do" in again.output
    check = CliRunner().invoke(cli, ["storage", "check"], env=env)
    assert check.exit_code == 0 and "3 photos, 0 without" in check.output


def test_migrate_copies_another_backends_objects(  # type: ignore[no-untyped-def]
    s3_env: RcloneS3, tmp_path: Path, pg_sessions, pg_settings
) -> None:
    source = FileStorage(tmp_path / "old")
    photos = [_ingest(pg_sessions, source, jpeg(40 + i)) for i in range(2)]
    target = open_storage_url(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", s3_env.endpoint)
    env = _cli_env(target, s3_env, pg_settings)
    result = CliRunner().invoke(
        cli, ["storage", "migrate", "--from", source.url, "--to", target.url], env=env
    )
    assert result.exit_code == 0, result.output
    assert "2 copied" in result.output
    for photo in photos:
        assert read_original(target, photo.sha256) == source.get(photo_key(photo.sha256))


# --- the web app and the workers ----------------------------------------------------------


def _app(settings: Settings, store: Storage, server: RcloneS3 | None, **extra):  # type: ignore[no-untyped-def]
    app = create_app(
        replace(
            settings,
            storage_url=store.url,
            s3_endpoint_url=server.endpoint if server else "",
            **extra,
        )
    )
    app.config["TESTING"] = True
    return app


def test_a_storage_outage_answers_503_and_commits_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, pg_settings, pg_sessions
) -> None:
    server = start_rclone(tmp_path / "s3")
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = open_storage_url(server.env()["TRASHMAP_STORAGE_URL"], server.endpoint)
        client = _app(pg_settings, store, server).test_client()
        assert client.get("/readyz").get_json()["storage"] == "ok"
        server.stop()
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.get_json()["storage"] == "unavailable"
        down = client.post(
            "/api/v1/photos",
            data={"file": (io.BytesIO(jpeg(50)), "a.jpg")},
            content_type="multipart/form-data",
        )
        assert down.status_code == 503
        assert down.get_json()["error"]["code"] == "storage_unavailable"
        assert down.headers["Retry-After"] == "5"
        with pg_sessions() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Photo)) == 0
        server.start()
        assert client.get("/readyz").status_code == 200
        up = post_photo(client, PHOTO)
        assert up.status_code == 201
        with pg_sessions() as session:
            sha256 = session.get(Photo, up.get_json()["id"]).sha256
        assert read_original(store, sha256) == PHOTO.read_bytes()
    finally:
        server.stop()


@pytest.fixture(params=["file", "s3"])
def flow(request, tmp_path, pg_settings, pg_engine, pg_clean):  # type: ignore[no-untyped-def]
    """(app client, storage, worker) on one backend: a real worker process with its URL."""
    server = None
    if request.param == "file":
        store: Storage = FileStorage(tmp_path / "objects")
    else:
        server = request.getfixturevalue("s3_env")
        store = open_storage_url(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", server.endpoint)
    redis.Redis.from_url(REDIS_URL).delete(pg_settings.queue_name)
    worker = WorkerProcess(
        pg_settings, tmp_path / "worker.log", extra_env=_backend_env(store, server)
    )
    try:
        worker.wait_ready(None)
        app = _app(pg_settings, store, server, storage_presign=server is not None)
        yield app.test_client(), store, worker, server
    finally:
        worker.stop()


@pytest.mark.slow
def test_upload_worker_and_image_on_each_backend(flow, pg_sessions) -> None:  # type: ignore[no-untyped-def]
    client, store, worker, server = flow
    ids = [post_photo(client, PHOTO).get_json()["id"]]
    ids.append(
        client.post(
            "/api/v1/photos",
            data={"file": (io.BytesIO(jpeg(60, (900, 700))), "b.jpg")},
            content_type="multipart/form-data",
        ).get_json()["id"]
    )
    assert wait_for_status(pg_sessions, ids, timeout_s=300) == dict.fromkeys(ids, "done"), (
        worker.log()[-3000:]
    )
    with pg_sessions() as session:
        sha256 = session.get(Photo, ids[0]).sha256
    assert read_original(store, sha256) == PHOTO.read_bytes()

    image = client.get(f"/api/v1/photos/{ids[0]}/image", query_string={"max_size": 256})
    if server is None:
        assert image.status_code == 200 and image.mimetype == "image/jpeg"
        assert image.headers["Cache-Control"] == "public, max-age=86400"
        body = image.data
        etag = image.headers["ETag"]
        again = client.get(
            f"/api/v1/photos/{ids[0]}/image",
            query_string={"max_size": 256},
            headers={"If-None-Match": etag},
        )
        assert again.status_code == 304
    else:
        # Presigned: the bytes come from the S3 server itself, not through the app.
        assert image.status_code == 302
        with urllib.request.urlopen(image.headers["Location"], timeout=10) as response:
            body = response.read()
    assert body == store.get(derivative_key(sha256, 256))
    assert max(Image.open(io.BytesIO(body)).size) == 256


@pytest.mark.slow
def test_an_s3_outage_during_uploads_loses_nothing_and_leaves_no_orphan(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, pg_settings, pg_engine, pg_sessions
) -> None:
    server = start_rclone(tmp_path / "s3")
    worker = None
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = open_storage_url(server.env()["TRASHMAP_STORAGE_URL"], server.endpoint)
        redis.Redis.from_url(REDIS_URL).delete(pg_settings.queue_name)
        worker = WorkerProcess(pg_settings, tmp_path / "worker.log", extra_env=server.env())
        worker.wait_ready(None)
        client = _app(pg_settings, store, server).test_client()
        statuses: dict[str, list[int]] = {"before": [], "during": [], "after": []}
        accepted: list[int] = []
        seed = 100
        for phase, count in (("before", 6), ("during", 4), ("after", 6)):
            if phase == "during":
                server.stop()  # the worker is reading the first photos meanwhile
            if phase == "after":
                server.start()
            for _ in range(count):
                seed += 1
                response = client.post(
                    "/api/v1/photos",
                    data={"file": (io.BytesIO(jpeg(seed)), f"{seed}.jpg")},
                    content_type="multipart/form-data",
                )
                statuses[phase].append(response.status_code)
                if response.status_code == 201:
                    accepted.append(response.get_json()["id"])
                else:
                    assert response.get_json()["error"]["code"] == "storage_unavailable"
        assert statuses["before"] == [201] * 6 and statuses["after"] == [201] * 6
        assert statuses["during"] == [503] * 4
        final = wait_for_status(pg_sessions, accepted, timeout_s=400)
        assert final == dict.fromkeys(accepted, "done"), worker.log()[-3000:]
        with pg_sessions() as session:
            rows = set(session.scalars(sa.select(Photo.sha256)))
        assert len(rows) == 12
        assert all(store.exists(photo_key(sha256)) for sha256 in rows)
        collect_garbage(store, pg_engine, older_than_s=0)
        left = {sha256_of_key(o.key) for o in store.list("photos/")}
        assert left == rows  # every object has its row, every row its object
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def test_storage_commands_refuse_in_one_line(tmp_path: Path, monkeypatch, pg_settings) -> None:  # type: ignore[no-untyped-def]
    server = start_rclone(tmp_path / "s3")
    server.stop()  # a server that is down
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    store = open_storage_url(server.env()["TRASHMAP_STORAGE_URL"], server.endpoint)
    runner = CliRunner()
    down = runner.invoke(cli, ["storage", "gc"], env=_cli_env(store, server, pg_settings))
    assert down.exit_code == 2
    assert "storage unavailable" in down.output and "Traceback" not in down.output
    bad = _cli_env(store, server, pg_settings) | {"TRASHMAP_STORAGE_URL": "ftp://host/x"}
    refused = runner.invoke(cli, ["storage", "check"], env=bad)
    assert refused.exit_code == 2 and "TRASHMAP_STORAGE_URL" in refused.output
