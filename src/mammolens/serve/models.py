"""Database models of the service (SQLAlchemy 2 ORM).

The schema is created and upgraded by the Alembic migrations in ``serve/migrations``
(:func:`mammolens.serve.db.upgrade`), never by ``create_all``, so a PostgreSQL
deployment and the embedded SQLite file follow the same history.

Tables
------
``users``         reader / admin accounts (argon2 password hashes).
``studies``       one row per exam (StudyInstanceUID): intake source, queue status,
                  exam-level AI score, reading status, optional ground truth and
                  reader-study membership.
``images``        one row per DICOM instance of a study: stored file name (derived from a
                  hash, never from user input), laterality/view, image and breast scores,
                  heatmap file.
``outputs``       DICOM objects written for a scored study (SR, secondary capture,
                  segmentation/parametric map) and whether they were stored to the PACS.
``reader_cases``  a reader's randomised case list (reader-study mode).
``reads``         one read of a case: ``unaided`` or ``aided``; probability of malignancy
                  (0-100), BI-RADS, heatmap acceptability.
``auth_sessions`` one row per login: a session token is valid only while its row is
                  neither revoked (logout) nor expired.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

ROLES = ("reader", "admin")
STUDY_STATUSES = ("queued", "scoring", "scored", "failed")
READING_STATUSES = ("unread", "in_progress", "read")
MODALITIES = ("unaided", "aided")
SOURCES = ("upload", "dicomweb", "watch")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    #: bumped on password change / deactivation: invalidates issued session tokens
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)


class AuthSession(Base):
    __tablename__ = "auth_sessions"

    #: random id carried (signed) in the session token
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    patient_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    accession: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    study_date: Mapped[str] = mapped_column(String(8), nullable=False, default="")
    manufacturer: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    source: Mapped[str] = mapped_column(String(16), nullable=False, default="upload")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    exam_score: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    model: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    reading_status: Mapped[str] = mapped_column(String(16), nullable=False, default="unread")
    #: ground truth for reader studies (1 malignant, 0 not), set by an admin
    truth: Mapped[int | None] = mapped_column(Integer, nullable=True)
    in_reader_study: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    #: DICOM outputs of a scored study, a durable queue like ``status``: '' (none wanted),
    #: ``pending`` -> ``writing`` -> ``written`` | ``stored`` (to the PACS) | ``failed``
    pacs_status: Mapped[str] = mapped_column(String(16), nullable=False, default="", index=True)
    output_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    scored_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    images: Mapped[list[Image]] = relationship(
        back_populates="study", cascade="all, delete-orphan", order_by="Image.id"
    )
    outputs: Mapped[list[Output]] = relationship(back_populates="study", cascade="all, delete-orphan")


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("sop_instance_uid", name="uq_images_sop"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    series_uid: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    #: file name inside the storage folder (hex digest + ".dcm"): never user input
    file: Mapped[str] = mapped_column(String(128), nullable=False)
    laterality: Mapped[str] = mapped_column(String(1), nullable=False, default="")
    view: Mapped[str] = mapped_column(String(8), nullable=False, default="")
    rows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    columns: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    breast_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    heatmap_file: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    #: heatmap peak (original pixel coordinates), for the SR finding location
    peak_x: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_y: Mapped[float | None] = mapped_column(Float, nullable=True)

    study: Mapped[Study] = relationship(back_populates="images")


class Output(Base):
    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # sr | sc | seg | pm
    sop_instance_uid: Mapped[str] = mapped_column(String(64), nullable=False)
    series_uid: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    file: Mapped[str] = mapped_column(String(128), nullable=False)
    stored: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="outputs")


class ReaderCase(Base):
    __tablename__ = "reader_cases"
    __table_args__ = (
        UniqueConstraint("reader_id", "study_id", name="uq_case_reader_study"),
        UniqueConstraint("reader_id", "position", name="uq_case_reader_position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    #: unaided -> aided -> done; the unaided read is locked once phase leaves "unaided"
    phase: Mapped[str] = mapped_column(String(16), nullable=False, default="unaided")

    study: Mapped[Study] = relationship()


class Read(Base):
    __tablename__ = "reads"
    __table_args__ = (UniqueConstraint("case_id", "modality", name="uq_read_case_modality"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("reader_cases.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String(16), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    birads: Mapped[int] = mapped_column(Integer, nullable=False)
    heatmap_acceptable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, default=utcnow)
