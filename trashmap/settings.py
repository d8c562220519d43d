"""Service settings, read once from the environment (Flask-free; every process uses it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, overload

# Sliced inference's largest tile overlap (settings, `--slice-overlap` and ml.slicing): past
# it the tile count explodes (0.95 cuts a 12 MP photo into thousands of tiles).
MAX_SLICE_OVERLAP = 0.9


class SettingsError(ValueError):
    """A TRASHMAP_* variable holds a value that cannot be used."""


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    """The variable's value; unset and empty both mean the default."""
    value = os.environ.get(name)
    return value if value else default


def _float(name: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SettingsError(f"{name}={raw!r} must be between {lo} and {hi}")
    return value


def _int(name: str, default: int, lo: int = 0) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < lo:
        raise SettingsError(f"{name}={raw!r} must be at least {lo}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be one of 1/0, true/false, yes/no, on/off")


def _limit(name: str, default: str) -> str:
    """A flask-limiter rate string such as `120/minute;2000/hour`, checked at start-up."""
    raw = _env(name, default) or default
    from limits import parse_many

    try:
        parse_many(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a rate limit such as 120/minute") from None
    return raw


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_env(name, default) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def _public_url(name: str) -> str:
    """An http(s) base URL without a trailing slash, or empty."""
    raw = (_env(name) or "").rstrip("/")
    if raw and (not raw.startswith(("http://", "https://")) or "?" in raw or "#" in raw):
        raise SettingsError(f"{name}={raw!r} must be a base URL like https://trashmap.example.org")
    return raw


def _storage_url(name: str) -> str:
    """file:///absolute/path or s3://bucket[/prefix], or empty (the file:// default)."""
    raw = (_env(name) or "").rstrip("/")
    if not raw:
        return ""
    if raw.startswith("file:///") or (raw.startswith("s3://") and len(raw) > len("s3://")):
        return raw
    raise SettingsError(f"{name}={raw!r} must be file:///absolute/path or s3://bucket/prefix")


@dataclass(frozen=True)
class Settings:
    """Everything a trashmap process can be told; see `.env.example` for each variable."""

    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    queue_name: str = "trashmap.detect"
    weights: Path | None = None
    device: str = "auto"
    # None = each checkpoint's own threshold (0.5 for an untrained, random detector).
    score_threshold: float | None = None
    max_upload_mb: float = 40.0
    # Used only by `trashmap worker --untrained` (no checkpoint to describe the model).
    untrained_arch: str = "fasterrcnn_resnet50_fpn_v2"
    untrained_classes: int = 15
    # Override the checkpoint's input sizes (smaller = faster, less accurate).
    min_size: int | None = None
    max_size: int | None = None
    max_detections: int = 100
    task_time_limit_s: int = 600
    # A photo started this many times without finishing is failed (it crashes its worker).
    max_attempts: int = 3
    # Redis redelivers an unacknowledged task after this long; 0 = derived from the time limit.
    visibility_timeout_s: int = 0
    # Detection workers: micro-batches of up to batch_size photos, waiting at most batch_wait_ms.
    batch_size: int = 8
    batch_wait_ms: int = 50
    # Inference: fp32 | bf16 | fp16 | auto (bf16 on a CUDA GPU that has it, else fp32).
    precision: str = "auto"
    compile_model: bool = False
    draft_decode: bool = True
    # Sliced inference: tile side in original pixels (0 = off) and overlap; None = each
    # checkpoint's own setting (its "slicing"; off when it has none).
    slice_size: int | None = None
    slice_overlap: float | None = None
    # How often (seconds) a worker asks the database whether another model version is active.
    model_check_s: float = 10.0
    # Port of a worker's Prometheus endpoint; 0 = none.
    metrics_port: int = 0
    # Reconciler: run every N seconds in each worker (0 = never); re-queue photos left queued
    # longer than reconcile_after_s, and processing ones whose worker's lease has expired.
    reconcile_interval_s: int = 10
    reconcile_after_s: int = 900
    # Leases: each worker process renews its heartbeat every heartbeat_s; a worker silent for
    # lease_timeout_s is dead, and the photos it held are run again by another worker.
    heartbeat_s: float = 5.0
    lease_timeout_s: int = 30
    log_level: str = "INFO"
    secret_key: str = field(default="", repr=False)
    # flask-limiter limit strings ("120/minute;2000/hour"), per API key or else per client IP.
    rate_limit_enabled: bool = True
    rate_limit_read: str = "600/minute"
    rate_limit_upload: str = "60/minute;2000/day"
    # Where counters live; empty = the broker when it is Redis (shared by all web processes),
    # else this process's memory.
    rate_limit_storage_url: str = field(default="", repr=False)
    # The service's public base URL (https://trashmap.example.org), for absolute links in
    # answers; empty = links are root-relative paths (never built from the Host header).
    public_url: str = ""
    # Reverse proxies in front of the web app (compose: 1, nginx) whose X-Forwarded-For and
    # X-Forwarded-Proto are trusted for the client address; 0 = none, the socket's peer is
    # the client.
    proxy_hops: int = 0
    # Where photo bytes live: file:///path or s3://bucket/prefix; empty = file://<data_dir>/storage.
    storage_url: str = ""
    # The S3 API of a server that is not AWS (MinIO, Ceph, Garage): http://minio:9000.
    s3_endpoint_url: str = ""
    # s3:// only: /image answers with a redirect to a presigned URL instead of the bytes.
    storage_presign: bool = False

    @property
    def is_embedded(self) -> bool:
        """True when the database is SQLite (the no-server default)."""
        return self.database_url.startswith("sqlite")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read TRASHMAP_* variables; unset ones fall back to the embedded default."""
        # Absolute, so `trashmap up`'s children and any later command agree on one folder.
        data_dir = Path(_env("TRASHMAP_DATA_DIR", "var")).expanduser().resolve()
        weights = _env("TRASHMAP_WEIGHTS")
        min_size = _int("TRASHMAP_MIN_SIZE", 0, lo=0) or None
        max_size = _int("TRASHMAP_MAX_SIZE", 0, lo=0) or None
        settings = cls(
            data_dir=data_dir,
            database_url=_env("TRASHMAP_DATABASE_URL", f"sqlite:///{data_dir / 'trashmap.db'}"),
            broker_url=_env("TRASHMAP_BROKER_URL", f"sqla+sqlite:///{data_dir / 'broker.db'}"),
            queue_name=_env("TRASHMAP_QUEUE", "trashmap.detect"),
            weights=Path(weights).expanduser() if weights else None,
            device=_env("TRASHMAP_DEVICE", "auto"),
            score_threshold=(
                _float("TRASHMAP_SCORE_THRESHOLD", 0.5, 0.0, 1.0)
                if _env("TRASHMAP_SCORE_THRESHOLD") is not None
                else None
            ),
            max_upload_mb=_float("TRASHMAP_MAX_UPLOAD_MB", 40.0, 0.001, 4096),
            untrained_arch=_env("TRASHMAP_UNTRAINED_ARCH", "fasterrcnn_resnet50_fpn_v2"),
            untrained_classes=_int("TRASHMAP_UNTRAINED_CLASSES", 15, lo=1),
            min_size=min_size,
            max_size=max_size,
            max_detections=_int("TRASHMAP_MAX_DETECTIONS", 100, lo=1),
            task_time_limit_s=_int("TRASHMAP_TASK_TIME_LIMIT", 600, lo=10),
            max_attempts=_int("TRASHMAP_MAX_ATTEMPTS", 3, lo=1),
            visibility_timeout_s=_int("TRASHMAP_VISIBILITY_TIMEOUT", 0, lo=0),
            batch_size=_int("TRASHMAP_BATCH_SIZE", 8, lo=1),
            batch_wait_ms=_int("TRASHMAP_BATCH_WAIT_MS", 50, lo=0),
            precision=_choice("TRASHMAP_PRECISION", "auto", ("auto", "fp32", "bf16", "fp16")),
            compile_model=_bool("TRASHMAP_COMPILE", False),
            draft_decode=_bool("TRASHMAP_DRAFT_DECODE", True),
            slice_size=(
                _int("TRASHMAP_SLICE", 0, lo=0) if _env("TRASHMAP_SLICE") is not None else None
            ),
            slice_overlap=(
                _float("TRASHMAP_SLICE_OVERLAP", 0.2, 0.0, MAX_SLICE_OVERLAP)
                if _env("TRASHMAP_SLICE_OVERLAP") is not None
                else None
            ),
            model_check_s=_float("TRASHMAP_MODEL_CHECK_S", 10.0, 0.0, 86400.0),
            metrics_port=_int("TRASHMAP_METRICS_PORT", 0, lo=0),
            reconcile_interval_s=_int("TRASHMAP_RECONCILE_INTERVAL_S", 10, lo=0),
            reconcile_after_s=_int("TRASHMAP_RECONCILE_AFTER_S", 900, lo=0),
            heartbeat_s=_float("TRASHMAP_HEARTBEAT_S", 5.0, 0.1, 3600.0),
            lease_timeout_s=_int("TRASHMAP_LEASE_TIMEOUT_S", 30, lo=1),
            log_level=_env("TRASHMAP_LOG_LEVEL", "INFO").upper(),
            secret_key=_env("TRASHMAP_SECRET_KEY", ""),
            rate_limit_enabled=_bool("TRASHMAP_RATE_LIMIT_ENABLED", True),
            rate_limit_read=_limit("TRASHMAP_RATE_LIMIT_READ", "600/minute"),
            rate_limit_upload=_limit("TRASHMAP_RATE_LIMIT_UPLOAD", "60/minute;2000/day"),
            rate_limit_storage_url=_env("TRASHMAP_RATE_LIMIT_STORAGE_URL", ""),
            public_url=_public_url("TRASHMAP_PUBLIC_URL"),
            proxy_hops=_int("TRASHMAP_PROXY_HOPS", 0, lo=0),
            storage_url=_storage_url("TRASHMAP_STORAGE_URL"),
            s3_endpoint_url=_public_url("TRASHMAP_S3_ENDPOINT_URL"),
            storage_presign=_bool("TRASHMAP_STORAGE_PRESIGN", False),
        )
        return replace(settings, **overrides) if overrides else settings

    def ensure_data_dir(self) -> None:
        """Create the directory the embedded SQLite files live in."""
        if self.is_embedded or self.broker_url.startswith("sqla+sqlite"):
            self.data_dir.mkdir(parents=True, exist_ok=True)

    def describe(self) -> dict[str, str]:
        """Settings as strings for logs, with passwords in URLs masked."""
        out = {}
        for f in fields(self):
            if f.name in ("secret_key", "rate_limit_storage_url"):
                continue
            value = str(getattr(self, f.name))
            if f.name.endswith("_url"):
                value = _mask_password(value)
            out[f.name] = value
        return out


def _mask_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url.removeprefix("sqla+")).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (redis://...): mask by hand
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
        return url
