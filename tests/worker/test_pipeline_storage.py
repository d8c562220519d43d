"""How a worker treats storage faults: an outage is retried, a missing or damaged object
fails the photo with a reason (the pipeline's functions, run in this process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage_servers import BUCKET, RcloneS3, start_rclone
from tests.worker.conftest import photo_row, store_photo
from trashmap import storage
from trashmap.imaging import decode_oriented
from trashmap.storage import StorageUnavailable, default_storage, open_storage_url, photo_key
from worker import pipeline

PHOTO = "exifsamples__jpg_gps_DSCN0010.jpg"


def _decode(data: bytes):  # type: ignore[no-untyped-def]
    image, _ = decode_oriented(data, target=(320, 320))
    return image, 1.0


def _never(*_args: object) -> object:
    raise AssertionError("the photo must not reach the model")


def _detect(pg_sessions, membership, photo_id: int) -> pipeline.Outcome:  # type: ignore[no-untyped-def]
    return pipeline.detect_photo(pg_sessions, _decode, _never, photo_id, membership=membership)  # type: ignore[arg-type]


def test_a_missing_object_fails_the_photo_with_a_reason(pg_sessions, membership) -> None:  # type: ignore[no-untyped-def]
    photo_id = store_photo(pg_sessions, PHOTO)
    default_storage().delete(photo_key(photo_row(pg_sessions, photo_id).sha256))
    outcome = _detect(pg_sessions, membership, photo_id)
    assert outcome.status == "failed"
    row = photo_row(pg_sessions, photo_id)
    assert row.status == "failed" and "PhotoBytesMissing" in (row.error or "")


def test_a_corrupted_object_fails_the_photo_as_corrupted(pg_sessions, membership) -> None:  # type: ignore[no-untyped-def]
    photo_id = store_photo(pg_sessions, PHOTO)
    key = photo_key(photo_row(pg_sessions, photo_id).sha256)
    default_storage().put_bytes(key, (Path(__file__).parent / "conftest.py").read_bytes())
    outcome = _detect(pg_sessions, membership, photo_id)
    assert outcome.status == "failed"
    error = photo_row(pg_sessions, photo_id).error or ""
    assert "PhotoCorrupted" in error and "corrupted" in error


@pytest.fixture
def s3_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RcloneS3]:
    """The process's default storage on a real S3 server, restored afterwards."""
    server = start_rclone(tmp_path / "s3")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    previous = default_storage()
    storage.configure(open_storage_url(f"s3://{BUCKET}/photos", server.endpoint))
    try:
        yield server
    finally:
        storage.configure(previous)
        server.stop()


def test_a_storage_outage_is_retried_not_failed(  # type: ignore[no-untyped-def]
    s3_default: RcloneS3, pg_sessions, membership
) -> None:
    photo_id = store_photo(pg_sessions, PHOTO)
    s3_default.stop()
    with pytest.raises(StorageUnavailable) as raised:
        _detect(pg_sessions, membership, photo_id)
    assert pipeline.is_transient(raised.value)  # the task retries it later
    assert photo_row(pg_sessions, photo_id).status in ("queued", "processing")
