"""The database schema as typed SQLAlchemy 2 models (the migrations mirror these)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic autogenerate and `alembic check` agree on both backends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PhotoStatus(str, enum.Enum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


class LocationSource(str, enum.Enum):
    exif = "exif"
    client = "client"


class Photo(Base):
    """One uploaded photo's metadata; its bytes are objects in storage (trashmap.storage)."""

    __tablename__ = "photos"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'processing', 'done', 'failed')", name="status_valid"
        ),
        CheckConstraint("location_source IN ('exif', 'client')", name="location_source_valid"),
        CheckConstraint("lat IS NULL OR (lat >= -90 AND lat <= 90)", name="lat_range"),
        CheckConstraint("lon IS NULL OR (lon >= -180 AND lon <= 180)", name="lon_range"),
        Index("ix_photos_status_updated_at", "status", "updated_at"),
        Index("ix_photos_lat_lon", "lat", "lon"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    byte_size: Mapped[int] = mapped_column(Integer)
    original_filename: Mapped[str | None] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    orientation: Mapped[int] = mapped_column(Integer, default=1)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    alt: Mapped[float | None] = mapped_column(Float)
    location_source: Mapped[str | None] = mapped_column(String(16))
    # Wall-clock time the camera recorded; the UTC offset only when EXIF states it.
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), index=True)
    taken_at_offset: Mapped[str | None] = mapped_column(String(6))
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=PhotoStatus.queued.value)
    error: Mapped[str | None] = mapped_column(Text)
    # Runs that ended with their worker gone (killed, out of memory), since the last finished one.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The lease of a `processing` photo: the worker process running it (a `workers` id), until
    # when (renewed by its heartbeat), and a token that grows with every start, so a write
    # from a run that lost its lease is dropped.
    leased_by: Mapped[int | None] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The model version whose detections the photo page shows (the last completed run).
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    detections: Mapped[list[Detection]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", lazy="raise"
    )
    model_version: Mapped[ModelVersion | None] = relationship()

    @property
    def has_location(self) -> bool:
        return self.lat is not None and self.lon is not None


class Worker(Base):
    """A detection worker process, alive while its `heartbeat_at` is recent."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


# The key of model_versions.metrics that marks a random, untrained detector's row.
UNTRAINED_KEY = "untrained"


class ModelVersion(Base):
    """A detector checkpoint that has produced (or may produce) detections."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    arch: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    class_names: Mapped[list[str]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The checkpoint's model card (ml/model_card.py); None for checkpoints without one.
    card: Mapped[dict[str, Any] | None] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    active: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def untrained(self) -> bool:
        """A random detector (`trashmap worker --untrained`): its detections mean nothing."""
        return bool((self.metrics or {}).get(UNTRAINED_KEY))


class Detection(Base):
    """One box the detector found, with the photo's position copied for map queries."""

    __tablename__ = "detections"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
        CheckConstraint("x2 >= x1 AND y2 >= y1", name="box_ordered"),
        Index("ix_detections_photo_id_model_version_id", "photo_id", "model_version_id"),
        Index("ix_detections_lat_lon", "lat", "lon"),
        Index("ix_detections_label", "label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    label: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    photo: Mapped[Photo] = relationship(back_populates="detections")
    model_version: Mapped[ModelVersion] = relationship(lazy="joined")


class AnnotationSet(Base):
    """One review of a photo: its boxes (or "no litter"), by whom and when.

    Sets are only ever added: the photo's newest set (highest id) is the current one, the
    older ones are its audit trail. A photo with any set is verified.
    """

    __tablename__ = "annotation_sets"
    __table_args__ = (Index("ix_annotation_sets_photo_id_id", "photo_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"))
    no_litter: Mapped[bool] = mapped_column(Boolean, default=False)
    # The reviewing API key's name, kept as text: it outlives the key's revocation.
    reviewed_by: Mapped[str] = mapped_column(String(128))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    boxes: Mapped[list[AnnotationBox]] = relationship(
        back_populates="annotation_set",
        cascade="all, delete-orphan",
        order_by="AnnotationBox.id",
        lazy="selectin",
    )


class AnnotationBox(Base):
    """One verified box, in the photo's oriented (upright) pixels."""

    __tablename__ = "annotation_boxes"
    __table_args__ = (
        CheckConstraint("x2 > x1 AND y2 > y1", name="box_ordered"),
        Index("ix_annotation_boxes_set_id", "set_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("annotation_sets.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(128))
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)

    annotation_set: Mapped[AnnotationSet] = relationship(back_populates="boxes")


class ApiKey(Base):
    """A staff API key: only a SHA-256 of its secret is kept; `prefix` finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def active(self) -> bool:
        return self.revoked_at is None
