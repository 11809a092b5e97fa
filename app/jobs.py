"""What can happen to a job, as plain functions over a database session.

The app (API, UI) creates, lists, cancels and deletes jobs; job managers claim them, renew their
lease, report progress and finish them. Every write that a worker makes is conditional on it still
holding the lease (``lease_owner``), so a worker that lost its job (it was too slow to renew and
another took over) finds out instead of overwriting the other's work.

Claiming is atomic on both back ends: the candidate row is read with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL (concurrent workers skip each other's rows), and the update is a compare-and-set whose
WHERE repeats the claim condition, which SQLite (one writer at a time, ``BEGIN IMMEDIATE``) makes
atomic as well.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, SUCCEEDED, Job, JobEvent, utcnow

log = logging.getLogger(__name__)

# The share of a job's progress bar each pipeline stage fills.
STAGE_SPANS = {"melody": (0.0, 0.4), "vocal": (0.4, 1.0)}


class JobNotFound(LookupError):
    pass


class JobConflict(RuntimeError):
    """The job is in a state that does not allow this (e.g. cancelling a finished job)."""


class LeaseLost(RuntimeError):
    """The worker no longer holds the job (its lease expired and another worker took it, or it ended)."""


@dataclass(frozen=True)
class LeaseStatus:
    cancel_requested: bool


def _event(session: Session, job_id: str, state: str, stage: str = "", message: str = "",
           worker: str | None = None) -> None:
    session.add(JobEvent(job_id=job_id, at=utcnow(), state=state, stage=stage[:64], message=message,
                         worker=worker))


# --------------------------------------------------------------------------- the app's side


def create_job(sessions: sessionmaker[Session], *, job_id: str, input_file: str, input_name: str,
               params: dict[str, Any], owner: str | None = None, parent_id: str | None = None,
               artifacts: dict[str, Any] | None = None, stages: dict[str, Any] | None = None,
               progress: float = 0.0, made_as: str = "") -> Job:
    """Queue a new job whose input is already stored at ``input_file`` (relative to the data folder).

    With ``parent_id`` the job is a new version of that job's song: it joins the parent's family (same
    ``root_id``) as the next version number, and both jobs' histories say so (``made_as``: how, e.g.
    "re-run"). ``artifacts`` and ``stages`` are what the new job starts with (an edit's copied melody)."""
    now = utcnow()
    with sessions.begin() as s:
        root_id, version, parent = job_id, 1, None
        if parent_id is not None:
            # Locked (PostgreSQL) so two versions made from one job at once do not get the same number.
            parent = s.get(Job, parent_id, with_for_update=True)
            if parent is None:
                raise JobNotFound(parent_id)
            root_id = parent.root_id or parent.id
            highest = s.scalar(select(func.max(Job.version)).where(or_(Job.root_id == root_id, Job.id == root_id)))
            version = int(highest or parent.version or 1) + 1
        job = Job(id=job_id, created_at=now, updated_at=now, state=QUEUED, stage="queued", progress=progress,
                  stages=stages or {}, params=params, input_file=input_file, input_name=input_name[:255],
                  artifacts=artifacts or {}, checks={}, warnings={}, attempts=0, cancel_requested=False, owner=owner,
                  parent_id=parent_id, root_id=root_id, version=version)
        s.add(job)
        if parent is None:
            _event(s, job_id, QUEUED, "queued", "job created")
        else:
            how = f": {made_as}" if made_as else ""
            _event(s, job_id, QUEUED, "queued", f"job created as version {version}, made from job {parent_id}{how}")
            _event(s, parent_id, parent.state, parent.stage, f"version {version} made from this job{how} "
                   f"(job {job_id})")
    return job


def get_job(sessions: sessionmaker[Session], job_id: str, owner: str | None = None,
            with_events: bool = False) -> tuple[Job, list[dict[str, Any]]]:
    """The job (and its events, oldest first, when asked); JobNotFound also when another key owns it."""
    with sessions() as s:
        job = s.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        events = [e.to_dict() for e in job.events] if with_events else []
        s.expunge(job)
    return job, events


def list_jobs(sessions: sessionmaker[Session], *, owner: str | None = None, page: int = 1, per_page: int = 20,
              state: str | None = None) -> tuple[list[Job], int]:
    """One page of jobs, newest first, and how many there are in all."""
    cond = []
    if owner is not None:
        cond.append(Job.owner == owner)
    if state is not None:
        cond.append(Job.state == state)
    with sessions() as s:
        total = s.scalar(select(func.count()).select_from(Job).where(*cond)) or 0
        rows = s.scalars(select(Job).where(*cond).order_by(Job.created_at.desc(), Job.id)
                         .offset((page - 1) * per_page).limit(per_page)).all()
        for job in rows:
            s.expunge(job)
    return list(rows), int(total)


def request_cancel(sessions: sessionmaker[Session], job_id: str, owner: str | None = None) -> Job:
    """Cancel a queued job at once; ask the worker of a running one to stop (it does within 2 s)."""
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        if job.state in FINISHED:
            raise JobConflict(f"job {job_id} has already {job.state}; only queued or running jobs can be cancelled")
        now = utcnow()
        if job.state == QUEUED:
            job.state, job.stage, job.finished_at = CANCELLED, "cancelled", now
            job.error_code, job.error_message = "cancelled", "cancelled by the user before it started"
            _event(s, job_id, CANCELLED, "cancelled", "cancelled while queued")
        elif not job.cancel_requested:
            job.cancel_requested = True
            _event(s, job_id, RUNNING, job.stage, "cancel requested")
        job.updated_at = now
    return job


def delete_job(sessions: sessionmaker[Session], job_id: str, owner: str | None = None) -> Job:
    """Delete a finished job's row and events; the caller removes its files. Running jobs: JobConflict."""
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        if job.state not in FINISHED:
            raise JobConflict(f"job {job_id} is {job.state}; cancel it first, then delete it")
        s.delete(job)
    return job


def requeue_stage(sessions: sessionmaker[Session], job_id: str, *, from_states: Collection[str], stage: str,
                  progress: float, params: Mapping[str, Any], message: str, owner: str | None = None) -> Job:
    """Queue a finished job again so a worker runs its pipeline from ``stage`` on (the stages before keep
    their artifacts), with ``params`` merged into its parameters; ``message`` goes into its history.

    The change is a compare-and-set on the state read, so of two concurrent requests one wins and the
    other gets JobConflict, as does a job whose state is not one of ``from_states``."""
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        state = job.state
        if state not in from_states:
            raise JobConflict(f"job {job_id} is {state}; only a {' or '.join(sorted(from_states))} job can do this")
        stages = {k: v for k, v in (job.stages or {}).items() if k != stage}
        now = utcnow()
        result = s.execute(
            update(Job).where(Job.id == job_id, Job.state == state)
            .values(state=QUEUED, stage="queued", progress=progress, stages=stages,
                    params={**(job.params or {}), **params}, started_at=None, finished_at=None, updated_at=now,
                    error_code=None, error_message=None, attempts=0, cancel_requested=False, lease_owner=None,
                    lease_expires_at=None, service_task=None)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise JobConflict(f"job {job_id} changed meanwhile; try again")
        _event(s, job_id, QUEUED, "queued", message)
        s.flush()
        job = s.get(Job, job_id, populate_existing=True)
        assert job is not None
        s.expunge(job)
    return job


# --------------------------------------------------------------------------- the worker's side


def _claimable(now):
    return or_(and_(Job.state == QUEUED, Job.cancel_requested.is_(False)),
               and_(Job.state == RUNNING, Job.lease_expires_at < now))


def _expire_abandoned(s: Session, now, max_attempts: int) -> None:
    """Jobs whose worker died: cancelled if that was asked for, failed once out of attempts."""
    stale = s.scalars(select(Job).where(Job.state == RUNNING, Job.lease_expires_at < now,
                                        or_(Job.cancel_requested.is_(True), Job.attempts >= max_attempts))
                      .limit(50)).all()
    for job in stale:
        if job.cancel_requested:
            job.state, job.error_code, job.error_message = CANCELLED, "cancelled", "cancelled by the user"
        else:
            job.state, job.error_code = FAILED, "worker_lost"
            job.error_message = (f"the worker running this job stopped {job.attempts} time(s) without finishing "
                                 f"it (last: {job.lease_owner}); giving up after {max_attempts} attempts")
        job.stage, job.finished_at, job.updated_at, job.lease_owner = job.state, now, now, None
        _event(s, job.id, job.state, job.stage, job.error_message or "")
        log.warning("job %s %s: %s", job.id, job.state, job.error_message)


def claim(sessions: sessionmaker[Session], worker: str, lease_seconds: float, max_attempts: int) -> Job | None:
    """Take the oldest job that is queued or whose worker's lease ran out; None when there is none."""
    with sessions.begin() as s:
        now = utcnow()
        _expire_abandoned(s, now, max_attempts)
        query = select(Job.id, Job.state, Job.lease_owner).where(_claimable(now)).order_by(Job.created_at).limit(1)
        if s.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        row = s.execute(query).first()
        if row is None:
            return None
        job_id, old_state, old_owner = row
        result = s.execute(
            update(Job).where(Job.id == job_id, _claimable(now))
            .values(state=RUNNING, lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now), updated_at=now,
                    error_code=None, error_message=None)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return None  # another worker was faster; the caller simply polls again
        job = s.get(Job, job_id, populate_existing=True)
        assert job is not None
        message = (f"taken over from {old_owner}, whose lease expired (attempt {job.attempts})"
                   if old_state == RUNNING else f"claimed (attempt {job.attempts})")
        _event(s, job_id, RUNNING, job.stage, message, worker)
        s.flush()
        s.expunge(job)
    return job


def _owned(job_id: str, worker: str):
    return and_(Job.id == job_id, Job.lease_owner == worker, Job.state == RUNNING)


def renew(sessions: sessionmaker[Session], job_id: str, worker: str, lease_seconds: float) -> LeaseStatus:
    """Extend the lease; says whether the user asked to cancel. LeaseLost when the job is not ours."""
    with sessions.begin() as s:
        now = utcnow()
        result = s.execute(update(Job).where(_owned(job_id, worker))
                           .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
                           .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise LeaseLost(job_id)
        cancel = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return LeaseStatus(cancel_requested=bool(cancel))


def update_job(sessions: sessionmaker[Session], job_id: str, worker: str, *, event: str | None = None,
               lease_seconds: float | None = None, **values: Any) -> LeaseStatus:
    """Write progress fields (stage, progress, stages, artifacts, checks, warnings, service_task) of
    a job this worker holds, optionally renewing the lease and logging an event."""
    with sessions.begin() as s:
        now = utcnow()
        values["updated_at"] = now
        if lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
        result = s.execute(update(Job).where(_owned(job_id, worker)).values(**values)
                           .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise LeaseLost(job_id)
        if event:
            _event(s, job_id, RUNNING, str(values.get("stage", "")), event, worker)
        cancel = s.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return LeaseStatus(cancel_requested=bool(cancel))


def finish(sessions: sessionmaker[Session], job_id: str, worker: str, state: str, *,
           error_code: str | None = None, error_message: str | None = None, **values: Any) -> None:
    """End a job this worker holds: succeeded, failed (with the error) or cancelled."""
    assert state in FINISHED
    with sessions.begin() as s:
        now = utcnow()
        values.update(state=state, stage=state, finished_at=now, updated_at=now, lease_owner=None,
                      lease_expires_at=None, error_code=error_code, error_message=error_message, service_task=None)
        if state == SUCCEEDED:
            values["progress"] = 1.0
        result = s.execute(update(Job).where(_owned(job_id, worker)).values(**values)
                           .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            raise LeaseLost(job_id)
        _event(s, job_id, state, state, error_message or ("finished" if state == SUCCEEDED else state), worker)


def release(sessions: sessionmaker[Session], job_id: str, worker: str, reason: str) -> None:
    """Hand a job back to the queue (its worker is shutting down); the attempt does not count."""
    with sessions.begin() as s:
        now = utcnow()
        result = s.execute(update(Job).where(_owned(job_id, worker))
                           .values(state=QUEUED, lease_owner=None, lease_expires_at=None, updated_at=now,
                                   attempts=Job.attempts - 1, service_task=None)
                           .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            _event(s, job_id, QUEUED, "queued", reason, worker)
