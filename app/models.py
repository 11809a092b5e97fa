"""The database schema: jobs and their events (SQLAlchemy 2, declarative).

Times are naive UTC datetimes (SQLite has no time zones; PostgreSQL stores them as given), written
by the application, never by the database, so both back ends compare them the same way.
Schema changes go through Alembic migrations (``app/alembic/versions``), never ``create_all``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Job states (shared/DESIGN.md, "Jobs").
QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (the form every time column holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One song request: the upload, its parameters, where it is in the pipeline and what it made."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    # The stage running now ("melody: beats", "vocal: sing", ...) and the whole job's progress 0..1.
    stage: Mapped[str] = mapped_column(String(64), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    # Per pipeline stage ("melody", "vocal"): {"state", "progress", "detail"}.
    stages: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_file: Mapped[str] = mapped_column(String(512))  # relative to SHARED_DATA_DIR
    input_name: Mapped[str] = mapped_column(String(255), default="")  # the name the user uploaded
    # Artifact name -> path relative to SHARED_DATA_DIR, recorded as each stage finishes.
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the take's qc summary
    warnings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"messages": [...]}
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The service task running for this job, so a cancel can reach it: {"service", "task_id"}.
    service_task: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # API key fingerprint
    # Versions of a song (app.versions): the job this one was made from (a re-run or an edit; null for an
    # original, or once that job is deleted), the family's first job (its own id for an original; kept
    # after the root is deleted, so the family stays one query) and the version number in that family.
    parent_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="SET NULL"),
                                                  index=True)
    root_id: Mapped[str | None] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    events: Mapped[list[JobEvent]] = relationship(back_populates="job", cascade="all, delete-orphan",
                                                  order_by="JobEvent.id", passive_deletes=True)

    __table_args__ = (Index("ix_jobs_state_lease", "state", "lease_expires_at"),)

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat(timespec="milliseconds") + "Z"

        end = self.finished_at
        seconds = None
        if self.started_at is not None:
            seconds = round(((end or utcnow()) - self.started_at).total_seconds(), 1)
        return {
            "id": self.id, "state": self.state, "stage": self.stage, "progress": round(self.progress or 0.0, 4),
            "stages": self.stages or {}, "params": self.params or {}, "input_name": self.input_name,
            "created_at": iso(self.created_at), "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at), "duration_seconds": seconds,
            "files": sorted((self.artifacts or {}).keys()), "checks": self.checks or {},
            "warnings": (self.warnings or {}).get("messages", []),
            "error": None if self.error_code is None else {"code": self.error_code, "message": self.error_message},
            "attempts": self.attempts, "cancel_requested": bool(self.cancel_requested),
            "parent_id": self.parent_id, "root_id": self.root_id or self.id, "version": self.version or 1,
        }


class JobEvent(Base):
    """One state change or stage change of a job, for its history."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(64), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(128))

    job: Mapped[Job] = relationship(back_populates="events")

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(timespec="milliseconds") + "Z", "state": self.state, "stage": self.stage,
                "message": self.message, "worker": self.worker}
