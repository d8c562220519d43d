"""Service settings, read once from the environment (Flask-free; every process uses it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A TRASHMAP_* variable holds a value that cannot be used."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


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


@dataclass(frozen=True)
class Settings:
    """Everything a trashmap process can be told; see `.env.example` for each variable."""

    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = ""
    queue_name: str = "trashmap.detect"
    weights: Path | None = None
    device: str = "auto"
    score_threshold: float = 0.5
    max_upload_mb: float = 40.0
    # Used only by `trashmap worker --untrained` (no checkpoint to describe the model).
    untrained_arch: str = "fasterrcnn_resnet50_fpn_v2"
    untrained_classes: int = 15
    # Override the checkpoint's input sizes (smaller = faster, less accurate).
    min_size: int | None = None
    max_size: int | None = None
    max_detections: int = 100
    task_time_limit_s: int = 600
    log_level: str = "INFO"
    secret_key: str = field(default="", repr=False)

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
        data_dir = Path(_env("TRASHMAP_DATA_DIR", "var")).expanduser()
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
            score_threshold=_float("TRASHMAP_SCORE_THRESHOLD", 0.5, 0.0, 1.0),
            max_upload_mb=_float("TRASHMAP_MAX_UPLOAD_MB", 40.0, 0.001, 4096),
            untrained_arch=_env("TRASHMAP_UNTRAINED_ARCH", "fasterrcnn_resnet50_fpn_v2"),
            untrained_classes=_int("TRASHMAP_UNTRAINED_CLASSES", 15, lo=1),
            min_size=min_size,
            max_size=max_size,
            max_detections=_int("TRASHMAP_MAX_DETECTIONS", 100, lo=1),
            task_time_limit_s=_int("TRASHMAP_TASK_TIME_LIMIT", 600, lo=10),
            log_level=_env("TRASHMAP_LOG_LEVEL", "INFO").upper(),
            secret_key=_env("TRASHMAP_SECRET_KEY", ""),
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
            if f.name == "secret_key":
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
