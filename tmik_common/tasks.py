"""The services' task runner: task types, the requests they take, and :class:`TaskRunner`.

Plain Python, no HTTP: each service's ``service.py`` is a thin edge over :class:`TaskRunner`; both
services use this one runner (shared/DESIGN.md: code both need lives in one common module). The
tasks themselves are files on the shared volume (:mod:`.taskstore`), so every replica of a
service sees all of them; each task runs in a child process (:mod:`.isolation`), so a crash ends
the task, not the service.

A *task type* (:class:`TaskType`) turns a request ``(job_id, input, params)`` into a unit of
work before anything is queued, so bad requests are refused up front with a
:class:`TaskRequestError` rather than discovered later by a worker. The work itself is a
callable ``work(progress) -> outputs`` that reports ``progress(stage, fraction)`` at its
checkpoints; the runner's callback raises :class:`Cancelled` there once a cancel was asked
for, which is how a running task stops. New capabilities (``generate``) add a ``TaskType``
next to ``analyze`` and pass it to the runner; nothing here changes.

Task lifecycle: ``queued -> running -> done | failed | cancelled``; a queued task can go
straight to ``cancelled``. A task whose replica died (or was stopped) while running it ends
``failed`` with the code ``task_interrupted``, so its client submits it again. Finished tasks
are forgotten ``ttl_seconds`` after they finish (and beyond ``max_finished`` of them, oldest
first), so the folder stays bounded in a long-running service; ``max_queued`` bounds the backlog.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .isolation import TaskCancelled, TaskCrashed, TaskFailed, TaskOutOfMemory, TaskProcess
from .procs import pid_alive, process_started
from .taskstore import TaskStore

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised at a task's next checkpoint (its progress callback) once a cancel was asked for."""

__all__ = [
    "Cancelled", "InputNotFound", "InvalidParams", "InvalidRequest", "ProgressCallback",
    "RunnerBusy", "TaskRequest", "TaskRequestError", "TaskRunner", "TaskType", "Work",
    "check_keys", "error_of", "number_param", "output_path", "public_view", "resolve_input",
    "validate_job_id",
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


# How a replica knows its peers: each running task records its claimant and a heartbeat.
HEARTBEAT_S = 2.0  # how often a replica refreshes the heartbeat of the tasks it runs
LOST_AFTER_S = 30.0  # a running task whose heartbeat is older than this has lost its replica
POLL_S = 0.25  # how often an idle replica looks at the shared queue
PRUNE_EVERY_S = 30.0
PROGRESS_WRITE_S = 0.25  # progress is written at most this often (and at every change of stage)
WARM_TIMEOUT_S = 900.0  # a task process that has not warmed up by then is started again
INTERRUPTED = "task_interrupted"


def public_view(record: Mapping[str, Any], cancel_marker: bool = False) -> dict[str, Any]:
    """The task as the service reports it (see shared/DESIGN.md, Service HTTP)."""
    return {
        "task_id": record["task_id"],
        "job_id": record["job_id"],
        "type": record["type"],
        "state": record["state"],
        "progress": round(float(record.get("progress") or 0.0), 4),
        "stage": record.get("stage") or record["state"],
        "outputs": dict(record.get("outputs") or {}),
        "error": dict(record["error"]) if record.get("error") else None,
        "cancel_requested": bool(record.get("cancel_requested") or cancel_marker),
        "runner": (record.get("owner") or {}).get("host"),
        "created_at": _now_iso(record["created_at"]),
        "updated_at": _now_iso(record["updated_at"]),
    }


class TaskRunner:
    """Runs one service's tasks from the shared task store (:mod:`.taskstore`); one per service process.

    ``workers`` slots each take the oldest queued task of the service, whichever replica it was
    submitted to, and run it:

    - ``isolation="process"`` (what the services use): in a :class:`~.isolation.TaskProcess`, a
      child that builds the task types from ``factory`` (a ``"module:function"`` name) and warms up
      with ``warm_up`` (another such name) once; a crash or a runaway allocation
      (``memory_limit_bytes``) fails that task and a new child takes over;
    - ``isolation="thread"``: in a thread of this process, with ``task_types``' own ``prepare``
      (for stand-ins and tests that need the work to share this process' memory); ``warm_up``
      is then a callable run once in the background.

    Requests are validated in the caller's thread with ``task_types`` before anything is stored,
    so a bad request never reaches the queue.
    """

    def __init__(
        self,
        task_types: Mapping[str, TaskType],
        data_dir: Path,
        *,
        service: str = "tasks",
        workers: int = 1,
        ttl_seconds: float = 3600.0,
        max_finished: int = 1000,
        max_queued: int = 1000,
        clock: Callable[[], float] = time.time,
        isolation: str = "thread",
        factory: str | None = None,
        warm_up: str | Callable[[], Any] | None = None,
        memory_limit_bytes: int = 0,
        log_level: str = "INFO",
        lost_after: float = LOST_AFTER_S,
    ):
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', got {isolation!r}")
        if isolation == "process" and not factory:
            raise ValueError("process isolation needs the factory of the task types (\"module:function\")")
        self._types = dict(task_types)
        self._data_dir = Path(data_dir).resolve()
        self._service = service
        self._store = TaskStore(self._data_dir, service)
        self._ttl = ttl_seconds
        self._max_finished = max_finished
        self._max_queued = max_queued
        self._clock = clock
        self._isolation = isolation
        self._factory = factory
        self._warm_up = warm_up
        self._memory_limit = int(memory_limit_bytes)
        self._log_level = log_level
        self._lost_after = lost_after
        self._instance = uuid.uuid4().hex
        self._owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": process_started(os.getpid()),
                       "instance": self._instance}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._owned: dict[str, dict[str, Any]] = {}  # records of the tasks this runner is running
        self._written: dict[str, float] = {}
        self._closed = False
        self._stop = threading.Event()
        self.ready = threading.Event()  # set once tasks run at full speed (warm-up done)
        self.worker_info: dict[str, Any] = {}  # what the warm-up reported (e.g. the model it loaded)
        self.sweep_lost()
        self._threads = [threading.Thread(target=self._slot, args=(i,), name=f"{service}-slot-{i}", daemon=True)
                         for i in range(max(1, workers))]
        self._threads.append(threading.Thread(target=self._housekeeping, name=f"{service}-housekeeping",
                                              daemon=True))
        if isolation == "thread":
            if callable(warm_up):
                threading.Thread(target=self._thread_warm_up, name=f"{service}-warm-up", daemon=True).start()
            else:
                self.ready.set()
        for thread in self._threads:
            thread.start()

    @property
    def task_types(self) -> list[str]:
        return sorted(self._types)

    @property
    def instance(self) -> str:
        return self._instance

    # -- the client's side -----------------------------------------------------------------

    def submit(self, request: TaskRequest) -> dict[str, Any]:
        """Validate and queue a task; return its snapshot. Raises :class:`TaskRequestError`."""
        task_type = self._types.get(request.type)
        if task_type is None:
            raise InvalidParams(
                "unknown_task_type",
                f"Unknown task type {request.type!r}; known types: {', '.join(self.task_types)}.",
            )
        validate_job_id(request.job_id)
        task_type.prepare(request, self._data_dir)  # refuses bad requests here; the work is made where it runs
        now = self._clock()
        with self._lock:
            if self._closed:
                raise RunnerBusy("shutting_down", "The service is shutting down; try again shortly.")
        queued = self._store.queue_length()
        if queued >= self._max_queued:
            raise RunnerBusy("busy", f"{queued} tasks are already waiting; try again later.")
        record = {"task_id": uuid.uuid4().hex, "job_id": request.job_id, "type": request.type,
                  "state": QUEUED, "progress": 0.0, "stage": QUEUED, "outputs": {}, "error": None,
                  "created_at": now, "updated_at": now, "finished_at": None, "seq": time.time_ns(),
                  "request": {"input": dict(request.input), "params": dict(request.params)},
                  "submitted_to": self._owner["host"]}
        try:
            self._store.enqueue(record)
        except (TypeError, ValueError) as exc:  # params that JSON cannot hold
            raise InvalidParams("invalid_param", f"The request cannot be stored: {exc}") from None
        log.info("task %s queued: type=%s job=%s", record["task_id"], record["type"], record["job_id"])
        with self._wake:
            self._wake.notify()
        return public_view(record)

    def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's snapshot, or None if unknown (or already pruned)."""
        record = self._store.read(task_id)
        if record is None:
            return None
        if self._expired(record, self._clock()):
            self._store.delete(task_id)
            return None
        return public_view(record, self._store.cancel_requested(task_id))

    def list_tasks(self, job_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Snapshots of all known tasks, oldest first, optionally filtered."""
        records = self._prune(self._clock())
        records.sort(key=lambda r: (r["created_at"], r.get("seq", 0)))
        return [public_view(r, self._store.cancel_requested(r["task_id"])) for r in records
                if (job_id is None or r["job_id"] == job_id) and (state is None or r["state"] == state)]

    def cancel(self, task_id: str) -> dict[str, Any] | None:
        """Cancel a task: a queued one at once, a running one at its next checkpoint.

        Finished tasks are left as they are (cancelling is idempotent). Returns the snapshot,
        or None if the task is unknown.
        """
        record = self._store.read(task_id)
        if record is None:
            return None
        if record["state"] in FINISHED_STATES:
            return public_view(record)
        log.info("task %s: cancel requested while %s", task_id, record["state"])
        self._store.request_cancel(task_id)
        if record["state"] == QUEUED and self._store.claim(task_id, {**self._owner, "cancel": True}):
            # We hold the claim, so no replica will start it: it ends here, cancelled.
            record = self._store.read(task_id) or record
            now = self._clock()
            record.update(state=CANCELLED, stage=CANCELLED, updated_at=now, finished_at=now, cancel_requested=True)
            self._store.write(record)
        return self.get(task_id)

    def close(self, *, cancel: bool = True, wait: bool = False, timeout: float = 10.0) -> None:
        """Stop taking tasks. With ``cancel``, the tasks this replica is running stop at their next
        checkpoint and are recorded as interrupted (``task_interrupted``: the job manager submits them
        again); queued tasks stay queued for the other replicas, or this one after its restart."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if cancel:
            self._stop.set()
        if wait:
            deadline = time.monotonic() + timeout
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()

    # -- housekeeping ------------------------------------------------------------------------

    def _expired(self, record: Mapping[str, Any], now: float) -> bool:
        finished = record.get("finished_at")
        return finished is not None and now - finished > self._ttl

    def _prune(self, now: float) -> list[dict[str, Any]]:
        """Forget finished tasks older than the TTL, and the oldest beyond ``max_finished``; the rest."""
        records = self._store.records()
        keep, finished = [], []
        for record in records:
            if self._expired(record, now):
                self._store.delete(record["task_id"])
            elif record.get("finished_at") is not None:
                finished.append(record)
            else:
                keep.append(record)
        finished.sort(key=lambda r: (r["finished_at"], r.get("seq", 0)))
        overflow = len(finished) - self._max_finished
        for record in finished[:max(0, overflow)]:
            self._store.delete(record["task_id"])
        return keep + finished[max(0, overflow):]

    def _is_lost(self, record: Mapping[str, Any], now: float) -> bool:
        owner = record.get("owner") or {}
        if owner.get("instance") == self._instance:
            return False
        if owner.get("host") == self._owner["host"]:
            pid = owner.get("pid")
            if not isinstance(pid, int) or not pid_alive(pid) or process_started(pid) != owner.get("started"):
                return True  # on this machine, and its process is gone (its pid may be another process' now)
        return now - float(record.get("heartbeat") or record.get("updated_at") or 0.0) > self._lost_after

    def sweep_lost(self) -> int:
        """Mark running tasks whose replica died as failed (``task_interrupted``); how many."""
        now = time.time()
        lost = 0
        for record in self._store.records():
            if record.get("state") == RUNNING and self._is_lost(record, now):
                error = {"code": INTERRUPTED, "message": f"the {self._service} stopped while running this task "
                         "(it was restarted or crashed); submit it again"}
                if self._store.mark_lost(record["task_id"], (record.get("owner") or {}).get("instance", ""),
                                         error, now):
                    lost += 1
                    log.warning("task %s (job %s): its replica %s is gone; marked interrupted", record["task_id"],
                                record["job_id"], (record.get("owner") or {}).get("host"))
        return lost

    def _housekeeping(self) -> None:
        next_sweep = next_prune = 0.0
        while not self._stop.wait(HEARTBEAT_S):
            now = time.time()
            with self._lock:
                owned = list(self._owned.values())
            for record in owned:
                self._save(record, heartbeat=True)
            try:
                if now >= next_sweep:
                    next_sweep = now + 5.0
                    self.sweep_lost()
                if now >= next_prune:
                    next_prune = now + PRUNE_EVERY_S
                    self._prune(self._clock())
            except OSError:
                log.exception("%s: housekeeping of the task folder failed", self._service)

    def _save(self, record: dict[str, Any], *, heartbeat: bool = False, force: bool = True) -> None:
        """Write a record this runner owns (the one writer of a claimed task)."""
        with self._lock:
            if record["task_id"] not in self._owned and record["state"] == RUNNING:
                return  # already finished and written
            now = time.time()
            if not force and now - self._written.get(record["task_id"], 0.0) < PROGRESS_WRITE_S:
                return
            if heartbeat or record["state"] == RUNNING:
                record["heartbeat"] = now
            snapshot = dict(record)
            self._written[record["task_id"]] = now
        try:
            self._store.write(snapshot)
        except OSError:
            log.exception("task %s: could not write its record", record["task_id"])

    # -- the slots --------------------------------------------------------------------------

    def _thread_warm_up(self) -> None:
        started = time.perf_counter()
        try:
            info = self._warm_up()  # type: ignore[misc]
        except Exception:  # a failed warm-up only costs the first task some time
            log.exception("%s: warm-up failed; the first task will be slower", self._service)
            return
        if isinstance(info, Mapping):
            self.worker_info = dict(info)
        self.ready.set()
        log.info("%s: warm-up done in %.1f s", self._service, time.perf_counter() - started)

    def _next_task(self) -> dict[str, Any] | None:
        for task_id in self._store.queued():
            if self._stop.is_set() or self._closed:
                return None
            if not self._store.claim(task_id, self._owner):
                continue
            record = self._store.read(task_id)
            if record is not None and record["state"] == QUEUED:
                return record
        with self._wake:
            if not self._closed:
                self._wake.wait(POLL_S)
        return None

    def _slot(self, index: int) -> None:
        process = None
        if self._isolation == "process":
            process = TaskProcess(f"{self._service}-{index}", str(self._factory), self._data_dir,
                                  warm_up=self._warm_up if isinstance(self._warm_up, str) else None,
                                  memory_limit_bytes=self._memory_limit, log_level=self._log_level)
        backoff = 1.0
        try:
            while not self._stop.is_set() and not self._closed:
                if process is not None and not process.ready:
                    process.start()
                    if not process.wait_ready(WARM_TIMEOUT_S, stop=self._stop.is_set):
                        process.stop(timeout=1.0)
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 60.0)
                        continue
                    backoff = 1.0
                    self.worker_info = dict(process.info)
                    self.ready.set()
                record = self._next_task()
                if record is not None:
                    self._execute(record, process)
        finally:
            if process is not None:
                process.stop()

    def _execute(self, record: dict[str, Any], process: TaskProcess | None) -> None:
        task_id = record["task_id"]
        now = self._clock()
        record.update(state=RUNNING, stage="starting", owner=dict(self._owner), updated_at=now)
        with self._lock:
            self._owned[task_id] = record
        if self._store.cancel_requested(task_id):
            self._finish(record, CANCELLED, {}, None)
            return
        self._save(record)
        started = time.perf_counter()
        log.info("task %s running: type=%s job=%s", task_id, record["type"], record["job_id"])
        cancelled = lambda: self._store.cancel_requested(task_id) or self._stop.is_set()

        def progress(stage: str, fraction: float) -> None:
            # The checkpoint: report, then (in a thread) stop here if a cancel was asked for.
            with self._lock:
                changed = str(stage) != record["stage"]
                record["stage"] = str(stage)
                if isinstance(fraction, int | float) and math.isfinite(fraction):
                    # Never go backwards: pollers draw progress bars from this.
                    record["progress"] = max(record["progress"], min(1.0, max(0.0, float(fraction))))
                record["updated_at"] = self._clock()
            self._save(record, force=changed)
            if process is None and cancelled():
                raise Cancelled(f"task {task_id} cancelled")

        state, outputs, error = DONE, {}, None
        request = {"job_id": record["job_id"], "type": record["type"], **record["request"]}
        try:
            if process is not None:
                outputs = process.run(task_id, request, progress=progress, cancelled=cancelled)
            else:
                work = self._types[record["type"]].prepare(
                    TaskRequest(job_id=record["job_id"], type=record["type"], input=record["request"]["input"],
                                params=record["request"]["params"]), self._data_dir)
                outputs = dict(work(progress))
        except (Cancelled, TaskCancelled):
            state = CANCELLED
        except (TaskFailed, TaskCrashed, TaskOutOfMemory) as exc:
            state, error = FAILED, exc.to_dict()
        except Exception as exc:  # one task's failure must never stop the service
            if cancelled():
                state = CANCELLED  # work that failed while being cancelled was cancelled, whatever it raised
            else:
                state, error = FAILED, error_of(exc)
                if error["code"] == "internal_error":
                    log.exception("task %s failed unexpectedly", task_id)
                else:
                    log.info("task %s failed: %s: %s", task_id, error["code"], error["message"])
        if state == CANCELLED and not self._store.cancel_requested(task_id):
            # Nobody asked: this replica is stopping. The client should submit it again.
            state, error = FAILED, {"code": INTERRUPTED, "message": f"the {self._service} was stopped while "
                                    "running this task; submit it again"}
        if state == DONE and self._store.cancel_requested(task_id):
            # The client asked to cancel and was told so; it no longer wants these results.
            state, outputs = CANCELLED, {}
        self._finish(record, state, outputs, error)
        log.info("task %s %s after %.2f s", task_id, state, time.perf_counter() - started)

    def _finish(self, record: dict[str, Any], state: str, outputs: dict[str, str],
                error: dict[str, str] | None) -> None:
        now = self._clock()
        with self._lock:
            record.update(state=state, stage=state, outputs=outputs, error=error, updated_at=now, finished_at=now)
            if state == DONE:
                record["progress"] = 1.0
            self._owned.pop(record["task_id"], None)
            self._written.pop(record["task_id"], None)
            snapshot = dict(record)
        self._store.write(snapshot)


def error_of(exc: BaseException) -> dict[str, str]:
    """The error a client sees: bad input keeps its code and message; anything else is ours."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if isinstance(code, str) and isinstance(message, str) and (isinstance(exc, ValueError)
                                                               or getattr(exc, "public", False)):
        return {"code": code, "message": message}  # AudioError, TaskRequestError, CheckpointError
    if isinstance(exc, MemoryError):
        return {"code": "task_out_of_memory", "message": "The task ran out of memory; use a shorter or smaller "
                "input, or give the service more memory."}
    if isinstance(exc, ValueError):
        return {"code": "invalid_input", "message": str(exc) or "The input could not be used."}
    return {"code": "internal_error", "message": "The task failed because of an internal error; "
            "it has been logged."}


_error_of = error_of


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
    if posix.parts[:1] == ("tasks",) or any(part.startswith(".") for part in posix.parts):
        # The secrets (.secrets/) and the task records (tasks/) are never a task's input.
        raise InvalidRequest("invalid_path", f"input.{name} must be a job's file, got {rel!r}.")
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
