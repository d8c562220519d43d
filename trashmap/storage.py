"""The only code that knows where a photo's bytes live: object storage, addressed by content.

`TRASHMAP_STORAGE_URL` names the backend: `file:///path` (a folder; the default is
`<data dir>/storage`) or `s3://bucket/prefix` (any S3-compatible server, through boto3).
Keys are derived from the photo's sha256, so an object is written once and never changes:

    photos/<sha256[:2]>/<sha256>        the original upload, exactly as received
    derivatives/<sha256>/<size>.jpg     a public, metadata-free rendition (photo_image)

The database keeps metadata only. Deployments from before object storage kept originals in
the `photo_blobs` table: `DatabaseStorage` reads them, reads fall back to it while it
exists, and `trashmap storage migrate` moves them out (then the table is dropped).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

import sqlalchemy as sa
from sqlalchemy.orm import Session

from trashmap.models import Photo

if TYPE_CHECKING:
    from trashmap.settings import Settings

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# The legacy table of original bytes (revision 0001), read without an ORM model: it is
# dropped once `trashmap storage migrate` has emptied it.
BLOB_TABLE = "photo_blobs"
_blobs = sa.table(BLOB_TABLE, sa.column("photo_id", sa.Integer), sa.column("data", sa.LargeBinary))


class StorageError(Exception):
    """Something about stored bytes went wrong."""


class StorageUnavailable(StorageError, ConnectionError):
    """The storage backend cannot be reached or refused the write: retry later (HTTP 503)."""


class PhotoBytesMissing(StorageError, LookupError):
    """The photo's original bytes cannot be had: no object under its key."""


class PhotoCorrupted(PhotoBytesMissing):
    """The stored object's bytes do not hash to the photo's sha256 (damaged at rest)."""


def photo_key(sha256: str) -> str:
    return f"photos/{sha256[:2]}/{sha256}"


def derivative_key(sha256: str, size: int) -> str:
    return f"derivatives/{sha256}/{size}.jpg"


def sha256_of_key(key: str) -> str | None:
    """The photo sha256 an object key belongs to (originals and derivatives alike)."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "photos" and len(parts[2]) == 64:
        return parts[2]
    if len(parts) == 3 and parts[0] == "derivatives" and len(parts[1]) == 64:
        return parts[1]
    return None


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Storage(Protocol):
    """A content-addressed object store. Writes are atomic: a key holds all or nothing."""

    url: str
    # Whether presigned_url hands out URLs a client can fetch from directly.
    can_presign: bool

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key` (the file may be moved away)."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; PhotoBytesMissing when there is none."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def list(self, prefix: str) -> Iterator[StoredObject]: ...

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL a client may fetch the object from directly, or None (bytes are proxied)."""

    def staging_dir(self) -> Path | None:
        """Where an upload is best spooled so that put_file is a rename (None: the temp dir)."""

    def check(self) -> None:
        """Raise StorageUnavailable unless the backend can take writes now (readiness)."""


class FileStorage:
    """Objects as files under a folder; a write is a temporary file renamed into place."""

    can_presign = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def staging_dir(self) -> Path | None:
        folder = self.root / "tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"storage folder {self.root} is not writable: {exc}") from exc
        return folder

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = self.staging_dir()
            if staging is not None and path.parent != staging:
                # Another filesystem, maybe: copy next to the target first, then rename.
                with tempfile.NamedTemporaryFile(dir=staging, delete=False) as out:
                    with open(path, "rb") as src:
                        shutil.copyfileobj(src, out, CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                path = Path(out.name)
            else:
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(path, target)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {key} under {self.root}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        staging = self.staging_dir()
        try:
            with tempfile.NamedTemporaryFile(dir=staging, delete=False) as out:
                out.write(data)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {key} under {self.root}: {exc}") from exc
        self.put_file(key, Path(out.name))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise PhotoBytesMissing(f"no object {key} in {self.url}") from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read {key} under {self.root}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot remove {key} under {self.root}: {exc}") from exc

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for path in base.rglob("*"):  # a generator: millions of objects are never all listed
            if path.is_file():
                stat = path.stat()
                yield StoredObject(
                    str(path.relative_to(self.root)),
                    stat.st_size,
                    datetime.fromtimestamp(stat.st_mtime, UTC),
                )

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None

    def check(self) -> None:
        folder = self.staging_dir()  # creates the folder, or says it cannot
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"storage folder {folder} is not writable")


class S3Storage:
    """Objects in an S3 bucket (AWS, MinIO, Ceph, Garage, rclone ...), through boto3.

    Credentials and region come from boto3's usual sources (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, profiles, instance roles);
    `endpoint_url` points at a server that is not AWS. An upload is one PUT, or a
    multipart upload above 16 MB: S3 shows an object only once it is complete.
    """

    can_presign = True

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Short timeouts and few retries: a dead server answers the client with 503 in
        # seconds instead of holding its request (and a web thread) for minutes.
        config = Config(
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=32,
            # SigV4 for presigned URLs too (boto3 still presigns with V2 by default).
            signature_version="s3v4",
            # Non-AWS servers (MinIO, Ceph, Garage) are reached at one host: bucket in the path.
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or None, config=config
        )
        self.transfer = TransferConfig(
            multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise PhotoBytesMissing(f"no object {key} in {self.url}") from None
            raise StorageUnavailable(f"{self.url}: {key}: {code or status}: {exc}") from exc
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise StorageUnavailable(f"{self.url} unreachable ({key}): {exc}") from exc

    def staging_dir(self) -> Path | None:
        return None

    def put_file(self, key: str, path: Path) -> None:
        with self._errors(key):
            self.client.upload_file(str(path), self.bucket, self._key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        with self._errors(key):
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))[
                "Body"
            ].read()
            return body

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except PhotoBytesMissing:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[StoredObject]:
        skip = len(self.prefix) + 1 if self.prefix else 0
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"][skip:], item["Size"], item["LastModified"])

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        with self._errors(key):
            url: str = self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(key)},
                ExpiresIn=expires_s,
            )
            return url

    def check(self) -> None:
        # One HEAD on the bucket: the server answers and the credentials may use it.
        try:
            with self._errors(""):
                self.client.head_bucket(Bucket=self.bucket)
        except PhotoBytesMissing:  # a 404 here is the bucket's, not an object's
            raise StorageUnavailable(f"{self.url}: no bucket {self.bucket!r}") from None

    def ensure_bucket(self) -> None:
        """Create the bucket when the server has none of that name (tests, first start)."""
        from botocore.exceptions import ClientError

        with self._errors(""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError:
                self.client.create_bucket(Bucket=self.bucket)


class DatabaseStorage:
    """Read-only view of the legacy `photo_blobs` table, under the same photo keys."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.url = f"database:{engine.url.render_as_string(hide_password=True)}"

    def present(self) -> bool:
        return sa.inspect(self.engine).has_table(BLOB_TABLE)

    def get(self, key: str) -> bytes:
        sha256 = sha256_of_key(key)
        with self.engine.connect() as conn:
            data = conn.scalar(
                sa.select(_blobs.c.data)
                .join(Photo.__table__, Photo.__table__.c.id == _blobs.c.photo_id)
                .where(Photo.__table__.c.sha256 == sha256)
            )
        if data is None or not key.startswith("photos/"):
            raise PhotoBytesMissing(f"no blob for {key} in the database")
        return bytes(data)

    def photo_ids(self) -> list[int]:
        with self.engine.connect() as conn:
            return list(conn.scalars(sa.select(_blobs.c.photo_id).order_by(_blobs.c.photo_id)))

    def delete_photo(self, photo_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_blobs).where(_blobs.c.photo_id == photo_id))


def storage_url(settings: Settings) -> str:
    """The configured storage URL, the file:// default filled in."""
    return settings.storage_url or f"file://{settings.data_dir / 'storage'}"


def open_storage_url(url: str, endpoint_url: str = "") -> Storage:
    """A Storage for `file:///path` or `s3://bucket/prefix`."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: a file URL needs an absolute path, file:///path")
        return FileStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{url!r}: an S3 URL names a bucket, s3://bucket/prefix")
        return S3Storage(parsed.netloc, parsed.path, endpoint_url or None)
    raise ValueError(f"{url!r}: storage URLs are file:///path or s3://bucket/prefix")


def open_storage(settings: Settings) -> Storage:
    """The storage the settings name."""
    return open_storage_url(storage_url(settings), settings.s3_endpoint_url)


_default: Storage | None = None
_default_lock = threading.Lock()


def configure(storage: Storage | None) -> None:
    """Set the storage that calls without an explicit one use (None: from the environment)."""
    global _default
    _default = storage


def default_storage() -> Storage:
    """The process's storage: the configured one, else the one TRASHMAP_* variables name."""
    global _default
    with _default_lock:
        if _default is None:
            from trashmap.settings import Settings

            _default = open_storage(Settings.from_env())
        return _default


# --- originals ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """An upload spooled to a local file, hashed on the way."""

    path: Path
    sha256: str
    size: int


@contextlib.contextmanager
def staged_upload(storage: Storage, source: IO[bytes] | bytes) -> Iterator[Staged]:
    """Copy an upload to a temporary file in chunks, hashing it; removed afterwards.

    The bytes are never held whole in memory: the file is inspected where it lies and
    handed to `put_file`, which renames it on disk or streams it to S3.
    """
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(
        dir=storage.staging_dir(), prefix="upload-", delete=False
    ) as out:
        path = Path(out.name)
        try:
            if isinstance(source, bytes):
                digest.update(source)
                out.write(source)
                size = len(source)
            else:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    try:
        yield Staged(path, digest.hexdigest(), size)
    finally:
        path.unlink(missing_ok=True)  # moved into place already, when it was stored


def store_original(storage: Storage, staged: Staged) -> None:
    """Put a staged upload under its content-addressed key (before its row is committed)."""
    storage.put_file(photo_key(staged.sha256), staged.path)


def put_photo_bytes(storage: Storage, data: bytes) -> str:
    """Store original bytes under their key and return the sha256 (tests, imports)."""
    sha256 = hashlib.sha256(data).hexdigest()
    storage.put_bytes(photo_key(sha256), data)
    return sha256


def read_original(storage: Storage, sha256: str, legacy: DatabaseStorage | None = None) -> bytes:
    """The original bytes with this sha256, verified; from `legacy` when not in storage."""
    key = photo_key(sha256)
    try:
        data = storage.get(key)
    except PhotoBytesMissing:
        # Asked on each miss, which only a deployment with unmoved blobs has often.
        if legacy is None or not legacy.present():
            raise
        data = legacy.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise PhotoCorrupted(f"{key}: the stored bytes do not match their sha256 (corrupted)")
    return data


def get_photo_bytes(session: Session, photo_id: int, storage: Storage | None = None) -> bytes:
    """The original bytes of photo `photo_id`, exactly as uploaded (checksum verified)."""
    sha256 = session.scalar(sa.select(Photo.sha256).where(Photo.id == photo_id))
    if sha256 is None:
        raise PhotoBytesMissing(f"no photo {photo_id}")
    engine = session.get_bind()
    legacy = DatabaseStorage(engine) if isinstance(engine, sa.Engine) else None
    try:
        return read_original(storage or default_storage(), sha256, legacy)
    except PhotoCorrupted as exc:
        raise PhotoCorrupted(f"photo {photo_id}: {exc}") from None
    except PhotoBytesMissing:
        raise PhotoBytesMissing(f"photo {photo_id} has no stored bytes") from None


def delete_photo_objects(storage: Storage, sha256: str, sizes: tuple[int, ...]) -> None:
    """Remove a deleted photo's original and renditions (what remains, gc finds)."""
    for key in (photo_key(sha256), *(derivative_key(sha256, size) for size in sizes)):
        storage.delete(key)


# --- derivatives -------------------------------------------------------------------------


def get_derivative(storage: Storage, sha256: str, size: int) -> bytes | None:
    """The stored rendition `size` of the photo with this sha256, or None if not made yet."""
    try:
        return storage.get(derivative_key(sha256, size))
    except PhotoBytesMissing:
        return None


def put_derivative(storage: Storage, sha256: str, size: int, data: bytes) -> None:
    """Keep a rendition; two requests that make it at once write the same bytes."""
    storage.put_bytes(derivative_key(sha256, size), data)


# --- maintenance: gc, check, migrate -------------------------------------------------------


@dataclass
class GcReport:
    examined: int = 0
    removed: list[str] | None = None
    kept_recent: int = 0


def collect_garbage(
    storage: Storage, engine: sa.Engine, older_than_s: float = 3600, dry_run: bool = False
) -> GcReport:
    """Remove objects of photos that have no row: an upload that crashed between storing
    its object and committing its row, or a deleted photo. Objects younger than
    `older_than_s` are kept: their upload may still be committing.
    """
    report = GcReport(removed=[])
    now = datetime.now(UTC)
    with engine.connect() as conn:
        known = set(conn.scalars(sa.select(Photo.sha256)))
    for prefix in ("photos/", "derivatives/"):
        for obj in storage.list(prefix):
            report.examined += 1
            sha256 = sha256_of_key(obj.key)
            if sha256 in known:
                continue
            if (now - obj.modified).total_seconds() < older_than_s:
                report.kept_recent += 1
                continue
            # Asked again, one row at a time: a photo committed since the listing keeps its object.
            with engine.connect() as conn:
                if conn.scalar(sa.select(Photo.id).where(Photo.sha256 == sha256)) is not None:
                    continue
            if not dry_run:
                storage.delete(obj.key)
            report.removed.append(obj.key)  # type: ignore[union-attr]
    if isinstance(storage, FileStorage):
        _remove_stale_staging(storage, now, older_than_s, dry_run)
    return report


def _remove_stale_staging(
    storage: FileStorage, now: datetime, older_than_s: float, dry_run: bool
) -> None:
    for obj in storage.list("tmp/"):
        if (now - obj.modified).total_seconds() >= older_than_s and not dry_run:
            storage.delete(obj.key)


@dataclass
class CheckProblem:
    photo_id: int
    sha256: str
    problem: str  # "missing" | "corrupted"


def check_objects(
    storage: Storage, engine: sa.Engine, verify: bool = False
) -> Iterator[tuple[int, CheckProblem | None]]:
    """For every photo row: (photo id, None) when its object exists (and, with `verify`,
    hashes to its sha256), else the problem. Legacy database blobs count as present."""
    legacy = DatabaseStorage(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Photo.id, Photo.sha256).order_by(Photo.id)).all()
    for photo_id, sha256 in rows:
        problem = None
        try:
            if verify or not storage.exists(photo_key(sha256)):
                read_original(storage, sha256, legacy)
        except PhotoCorrupted:
            problem = CheckProblem(photo_id, sha256, "corrupted")
        except PhotoBytesMissing:
            problem = CheckProblem(photo_id, sha256, "missing")
        yield photo_id, problem


def pending_moves(source: Storage | None, target: Storage, engine: sa.Engine) -> list[Any]:
    """What `migrate_objects` would copy: legacy blob photo ids, then other-backend keys."""
    legacy = DatabaseStorage(engine)
    todo: list[Any] = list(legacy.photo_ids()) if legacy.present() else []
    if source is not None:
        with engine.connect() as conn:
            todo += [photo_key(sha) for sha in conn.scalars(sa.select(Photo.sha256))]
    return todo


def migrate_one(item: int | str, source: Storage | None, target: Storage, engine: sa.Engine) -> str:
    """Copy one legacy blob (a photo id) or one object (a key) to `target`, verified.

    Resumable: an object the target already holds with the right checksum is not copied
    again. A legacy blob row is deleted once its copy is verified. Returns what was done.
    """
    if isinstance(item, int):
        with engine.connect() as conn:
            sha256 = conn.scalar(sa.select(Photo.sha256).where(Photo.id == item))
        legacy = DatabaseStorage(engine)
        done = _copy_verified(legacy, target, photo_key(sha256)) if sha256 else "orphan blob"
        legacy.delete_photo(item)
        return done
    assert source is not None
    try:
        return _copy_verified(source, target, item)
    except PhotoBytesMissing:
        return "missing at source"


def _copy_verified(source: Any, target: Storage, key: str) -> str:
    sha256 = sha256_of_key(key)
    if target.exists(key):
        with contextlib.suppress(PhotoBytesMissing):
            if hashlib.sha256(target.get(key)).hexdigest() == sha256:
                return "present"
    data = source.get(key)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise PhotoCorrupted(f"{key}: the source bytes do not match their sha256")
    target.put_bytes(key, data)
    if hashlib.sha256(target.get(key)).hexdigest() != sha256:
        raise PhotoCorrupted(f"{key}: the copy in {target.url} does not match its sha256")
    return "copied"


def retire_blob_table(conn: sa.Connection) -> int:
    """Drop `photo_blobs` when it is empty; the number of rows left (0 = gone or dropped).

    Called by migration 0008 and by `trashmap storage migrate` once the last blob moved.
    """
    if not sa.inspect(conn).has_table(BLOB_TABLE):
        return 0
    left = int(conn.scalar(sa.select(sa.func.count()).select_from(_blobs)) or 0)
    if left == 0:
        conn.execute(sa.text(f"DROP TABLE {BLOB_TABLE}"))
    return left
