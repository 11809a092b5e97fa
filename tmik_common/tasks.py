"""An in-process task runner: a registry of background tasks run on a bounded thread pool.

Plain Python, no HTTP: each service's ``service.py`` is a thin edge over :class:`TaskRunner`; both
services use this one runner (shared/DESIGN.md: code both need lives in one common module).

A *task type* (:class:`TaskType`) turns a request ``(job_id, input, params)`` into a unit of
work before anything is queued, so bad requests are refused up front with a
:class:`TaskRequestError` rather than discovered later by a worker. The work itself is a
callable ``work(progress) -> outputs`` that reports ``progress(stage, fraction)`` at its
checkpoints; the runner's callback raises :class:`Cancelled` there once a cancel was asked
for, which is how a running task stops. New capabilities (``generate``) add a ``TaskType``
next to ``analyze`` and pass it to the runner; nothing here changes.

Task lifecycle: ``queued -> running -> done | failed | cancelled``; a queued task can go
straight to ``cancelled``. Finished tasks are forgotten ``ttl_seconds`` after they finish
(and beyond ``max_finished`` of them, oldest first), so memory stays bounded in a
long-running service; ``max_queued`` bounds the backlog.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised at a task's next checkpoint (its progress callback) once a cancel was asked for."""

__all__ = [
    "Cancelled", "InputNotFound", "InvalidParams", "InvalidRequest", "ProgressCallback",
    "RunnerBusy", "Task", "TaskRequest", "TaskRequestError", "TaskRunner", "TaskType", "Work",
    "check_keys", "number_param", "output_path", "resolve_input", "validate_job_id",
]

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED_STATES = frozenset({DONE, FAILED, CANCELLED})

# A job id becomes a folder name under melody_results/, so only a plain token is allowed:
# no separators, no dots (so never "." or ".."), bounded length. UUIDs (hex or dashed) fit.
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

ProgressCallback = Callable[[str, float], None]
# The prepared unit of work: runs in a worker thread, returns outputs (paths relative to
# SHARED_DATA_DIR) keyed by a short name, e.g. {"analysis": "melody_results/j1/analysis.json"}.
Work = Callable[[ProgressCallback], dict[str, str]]


class TaskRequestError(ValueError):
    """A task request refused before it was queued; subclasses pick the HTTP status at the edge."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidRequest(TaskRequestError):
    """The request is malformed: missing fields, wrong shapes, unsafe ids or paths (HTTP 400)."""


class InputNotFound(TaskRequestError):
    """A named input file does not exist under SHARED_DATA_DIR (HTTP 404)."""


class InvalidParams(TaskRequestError):
    """Well-formed, but a value is unacceptable: unknown type, parameter out of range (HTTP 422)."""


class RunnerBusy(TaskRequestError):
    """The backlog is full or the runner is shutting down; try again later (HTTP 503)."""


@dataclass(frozen=True)
class TaskRequest:
    """What a client asked for, as received (already known to be JSON-shaped)."""

    job_id: str
    type: str
    input: Mapping[str, Any]
    params: Mapping[str, Any]


@dataclass(frozen=True)
class TaskType:
    """A kind of task: ``prepare`` validates a request and returns its work, or raises
    :class:`TaskRequestError`. It runs in the request thread, so it must be quick (no decoding)."""

    name: str
    prepare: Callable[[TaskRequest, Path], Work]


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Task:
    """One task's mutable record. The runner mutates it only under its lock."""

    id: str
    job_id: str
    type: str
    work: Work = field(repr=False)
    state: str = QUEUED
    progress: float = 0.0
    stage: str = QUEUED
    outputs: dict[str, str] = field(default_factory=dict)
    error: dict[str, str] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The task as the service reports it (see shared/DESIGN.md, Service HTTP)."""
        return {
            "task_id": self.id,
            "job_id": self.job_id,
            "type": self.type,
            "state": self.state,
            "progress": round(self.progress, 4),
            "stage": self.stage,
            "outputs": dict(self.outputs),
            "error": dict(self.error) if self.error else None,
            "cancel_requested": self.cancel_event.is_set(),
            "created_at": _now_iso(self.created_at),
            "updated_at": _now_iso(self.updated_at),
        }


class TaskRunner:
    """Owns the task registry and the worker pool. Thread-safe; one per service process."""

    def __init__(
        self,
        task_types: Mapping[str, TaskType],
        data_dir: Path,
        *,
        workers: int = 1,
        ttl_seconds: float = 3600.0,
        max_finished: int = 1000,
        max_queued: int = 1000,
        clock: Callable[[], float] = time.time,
    ):
        self._types = dict(task_types)
        self._data_dir = Path(data_dir).resolve()
        self._ttl = ttl_seconds
        self._max_finished = max_finished
        self._max_queued = max_queued
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="melody-task")

    @property
    def task_types(self) -> list[str]:
        return sorted(self._types)

    def submit(self, request: TaskRequest) -> dict[str, Any]:
        """Validate and queue a task; return its snapshot. Raises :class:`TaskRequestError`."""
        task_type = self._types.get(request.type)
        if task_type is None:
            raise InvalidParams(
                "unknown_task_type",
                f"Unknown task type {request.type!r}; known types: {', '.join(self.task_types)}.",
            )
        validate_job_id(request.job_id)
        work = task_type.prepare(request, self._data_dir)
        now = self._clock()
        task = Task(id=uuid.uuid4().hex, job_id=request.job_id, type=request.type, work=work,
                    created_at=now, updated_at=now)
        with self._lock:
            if self._closed:
                raise RunnerBusy("shutting_down", "The service is shutting down; try again shortly.")
            self._prune_locked(now)
            queued = sum(1 for t in self._tasks.values() if t.state == QUEUED)
            if queued >= self._max_queued:
                raise RunnerBusy("busy", f"{queued} tasks are already waiting; try again later.")
            self._tasks[task.id] = task
            snapshot = task.to_dict()
        log.info("task %s queued: type=%s job=%s", task.id, task.type, task.job_id)
        self._pool.submit(self._run, task)
        return snapshot

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's snapshot, or None if unknown (or already pruned)."""
        with self._lock:
            self._prune_locked(self._clock())
            task = self._tasks.get(task_id)
            return task.to_dict() if task else None

    def list_tasks(self, job_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of all known tasks, oldest first, optionally filtered."""
        with self._lock:
            self._prune_locked(self._clock())
            tasks = sorted(self._tasks.values(), key=lambda t: t.created_at)
            return [t.to_dict() for t in tasks
                    if (job_id is None or t.job_id == job_id) and (state is None or t.state == state)]

    def cancel(self, task_id: str) -> dict[str, Any] | None:
        """Cancel a task: a queued one at once, a running one at its next checkpoint.

        Finished tasks are left as they are (cancelling is idempotent). Returns the snapshot,
        or None if the task is unknown.
        """
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return None
            if task.state not in FINISHED_STATES:
                log.info("task %s: cancel requested while %s", task.id, task.state)
                task.cancel_event.set()
                if task.state == QUEUED:
                    # The worker that eventually picks it up sees the state and skips it.
                    self._finish_locked(task, CANCELLED, stage=CANCELLED)
            return task.to_dict()

    def close(self, *, cancel: bool = True, wait: bool = False) -> None:
        """Stop accepting tasks; with ``cancel``, cancel all queued and running ones."""
        with self._lock:
            self._closed = True
            ids = [t.id for t in self._tasks.values() if t.state not in FINISHED_STATES]
        if cancel:
            for task_id in ids:
                self.cancel(task_id)
        self._pool.shutdown(wait=wait, cancel_futures=cancel)

    # -- worker side ---------------------------------------------------------------------

    def _run(self, task: Task) -> None:
        with self._lock:
            if task.state != QUEUED:
                return
            task.state = RUNNING
            task.stage = "starting"
            task.updated_at = self._clock()
        started = time.perf_counter()
        log.info("task %s running: type=%s job=%s", task.id, task.type, task.job_id)

        def progress(stage: str, fraction: float) -> None:
            # The checkpoint: report, then stop here if a cancel was asked for.
            with self._lock:
                task.stage = str(stage)
                if isinstance(fraction, int | float) and math.isfinite(fraction):
                    # Never go backwards: pollers draw progress bars from this.
                    task.progress = max(task.progress, min(1.0, max(0.0, float(fraction))))
                task.updated_at = self._clock()
            if task.cancel_event.is_set():
                raise Cancelled(f"task {task.id} cancelled")

        state, outputs, error = DONE, {}, None
        try:
            outputs = dict(task.work(progress))
        except Cancelled:
            state = CANCELLED
        except Exception as exc:  # one task's failure must never stop the service
            if task.cancel_event.is_set():
                # Work that failed while being cancelled was cancelled, whatever it raised.
                state = CANCELLED
            else:
                state, error = FAILED, _error_of(exc)
                if error["code"] == "internal_error":
                    log.exception("task %s failed unexpectedly", task.id)
                else:
                    log.info("task %s failed: %s: %s", task.id, error["code"], error["message"])
        if state == DONE and task.cancel_event.is_set():
            # The client asked to cancel and was told so; it no longer wants these results.
            state, outputs = CANCELLED, {}
        with self._lock:
            task.outputs = outputs
            task.error = error
            if state == DONE:
                task.progress = 1.0
            self._finish_locked(task, state, stage=state)
        log.info("task %s %s after %.2f s", task.id, state, time.perf_counter() - started)

    def _finish_locked(self, task: Task, state: str, *, stage: str) -> None:
        now = self._clock()
        task.state = state
        task.stage = stage
        task.updated_at = now
        task.finished_at = now

    def _prune_locked(self, now: float) -> None:
        finished = [t for t in self._tasks.values() if t.finished_at is not None]
        expired = {t.id for t in finished if now - t.finished_at > self._ttl}
        survivors = sorted((t for t in finished if t.id not in expired), key=lambda t: t.finished_at)
        overflow = len(survivors) - self._max_finished
        if overflow > 0:
            expired.update(t.id for t in survivors[:overflow])
        for task_id in expired:
            del self._tasks[task_id]


def _error_of(exc: Exception) -> dict[str, str]:
    """The error a client sees: bad input keeps its code and message; anything else is ours."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if isinstance(code, str) and isinstance(message, str) and (isinstance(exc, ValueError)
                                                               or getattr(exc, "public", False)):
        return {"code": code, "message": message}  # AudioError, TaskRequestError, CheckpointError
    if isinstance(exc, ValueError):
        return {"code": "invalid_input", "message": str(exc) or "The input could not be used."}
    return {"code": "internal_error", "message": "The task failed because of an internal error; "
            "it has been logged."}


# -- helpers for TaskType.prepare -------------------------------------------------------


def validate_job_id(job_id: Any) -> str:
    """Return ``job_id`` if it is a safe folder-name token, else raise :class:`InvalidRequest`."""
    if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidRequest(
            "invalid_job_id",
            "job_id must be 1-128 characters of letters, digits, '-' and '_', starting with a "
            "letter or digit.",
        )
    return job_id


def resolve_input(data_dir: Path, rel: Any, name: str) -> Path:
    """Resolve a client-given path relative to SHARED_DATA_DIR to an existing file.

    Raises :class:`InvalidRequest` for absolute paths, ``..`` components or anything that
    resolves outside ``data_dir`` (a symlink, say), and :class:`InputNotFound` when no file
    is there.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise InvalidRequest("invalid_path", f"input.{name} must be a non-empty path string.")
    posix, windows = PurePosixPath(rel), PureWindowsPath(rel)
    if "\x00" in rel or posix.is_absolute() or windows.is_absolute() or windows.drive or rel.startswith("\\"):
        raise InvalidRequest("invalid_path", f"input.{name} must be relative to the shared data "
                             f"folder, got {rel!r}.")
    if ".." in posix.parts or ".." in windows.parts:
        raise InvalidRequest("invalid_path", f"input.{name} must not contain '..', got {rel!r}.")
    base = Path(data_dir).resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base):
        raise InvalidRequest("invalid_path", f"input.{name} points outside the shared data folder.")
    if not path.is_file():
        raise InputNotFound("input_not_found", f"No file at input.{name} = {rel!r}.")
    return path


def output_path(data_dir: Path, *parts: str) -> tuple[Path, str]:
    """An output location: the absolute path and the same path relative to ``data_dir``."""
    rel = PurePosixPath(*parts).as_posix()
    return Path(data_dir).resolve() / rel, rel


def number_param(params: Mapping[str, Any], name: str, default: float,
                 low: float, high: float) -> float:
    """A finite number within ``low..high`` from ``params`` (default when absent or null)."""
    value = params.get(name)
    if value is None:
        return default
    # bool is an int in Python, but "sensitivity": true is a client bug, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidParams("invalid_param", f"params.{name} must be a number, got {value!r}.")
    if not low <= value <= high:
        raise InvalidParams("invalid_param",
                            f"params.{name} must be within {low:g}..{high:g}, got {value!r}.")
    return float(value)


MAX_SEED = 2**31 - 1


def seed_param(params: Mapping[str, Any]) -> int:
    """``params.seed``: a whole number 0..2**31-1 (default 0 when absent or null)."""
    seed = params.get("seed")
    if seed is None:
        return 0
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InvalidParams("invalid_param", f"params.seed must be a whole number 0..{MAX_SEED}")
    return seed


def lyrics_param(request: TaskRequest, data_dir: Path):
    """The request's lyrics (``params.lyrics`` text or an ``input.lyrics`` file), parsed; None when absent.

    Both services take lyrics the same way; bad lyrics are refused before the task is queued.
    """
    from .lyrics import LyricsError, parse_lyrics, read_lyrics_file

    text = request.params.get("lyrics")
    if text is not None and not isinstance(text, str):
        raise InvalidParams("invalid_param", "params.lyrics must be text")
    try:
        if "lyrics" in request.input:
            if text:
                raise InvalidRequest("invalid_request", "give lyrics either as input.lyrics (a file) or as "
                                     "params.lyrics (text), not both")
            text = read_lyrics_file(resolve_input(data_dir, request.input["lyrics"], "lyrics"))
        return parse_lyrics(text) if text and text.strip() else None
    except LyricsError as exc:
        raise InvalidParams(exc.code, exc.message) from None


def check_keys(mapping: Mapping[str, Any], allowed: set[str], where: str,
               error: type[TaskRequestError] = InvalidParams) -> None:
    """Refuse keys outside ``allowed``: a misspelt parameter should fail loudly, not be ignored."""
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise error(
            f"unknown_{where}",
            f"Unknown {where} {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(sorted(allowed)) or 'none'}.",
        )
