"""Running tasks in a child process, so a crash, a runaway allocation or a hang ends one task, not the service.

A :class:`TaskProcess` is one long-lived child (``python -m tmik_common.task_child``: a clean
interpreter, no threads or locks inherited) that builds the service's task types once (``factory``, a
``"module:function"`` name), pays its warm-up once (``warm_up``: numba, models), and then runs
tasks one after another, sending progress back over a pipe. The parent (the service, or the
CLI) watches it:

- the child dies (SIGSEGV, SIGKILL by the kernel's OOM killer, ``os._exit``): the task fails with
  :class:`TaskCrashed`, naming the signal and the stage it was in; a new child is started;
- the child's process group grows beyond ``memory_limit_bytes``: it is killed and the task fails
  with :class:`TaskOutOfMemory`;
- a cancel is asked for: the child stops at the task's next checkpoint (its progress callback),
  or is killed if it has not within ``CANCEL_GRACE_S``.

The child leads its own process group (so its worker pools die with it) and asks the kernel to
kill it when its parent dies (so ``kill -9`` of a service leaves no orphans).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .errors import CodedError
from .procs import describe_exit, group_rss_bytes, kill_group

log = logging.getLogger(__name__)

__all__ = ["CANCEL_GRACE_S", "TaskCancelled", "TaskCrashed", "TaskFailed", "TaskOutOfMemory", "TaskProcess",
           "import_ref"]

CANCEL_GRACE_S = 3.0  # a cancelled task that has not stopped by then is killed
MEMORY_CHECK_S = 0.5
POLL_S = 0.1


class TaskFailed(CodedError):
    """The task ended with an error the child reported (bad input keeps its code and message)."""


class TaskCrashed(CodedError):
    """The task's process died (a crash, or killed from outside); the service itself is fine."""


class TaskOutOfMemory(CodedError):
    """The task's processes used more memory than allowed and were stopped."""


class TaskCancelled(Exception):
    """The task stopped because a cancel was asked for."""


def import_ref(ref: str) -> Any:
    """The object a ``"package.module:attribute"`` name refers to."""
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class TaskProcess:
    """One child process that runs tasks of ``factory()``'s types, one at a time.

    Not thread-safe: one thread (the slot's) starts it, runs tasks on it and stops it. That thread
    must live as long as the child: Linux delivers the parent-death signal when the *thread* that
    started the child ends.
    """

    def __init__(self, name: str, factory: str, data_dir: Path, *, warm_up: str | None = None,
                 memory_limit_bytes: int = 0, log_level: str = "INFO"):
        self.name = name
        self.factory = factory
        self.warm_up = warm_up
        self.data_dir = Path(data_dir)
        self.memory_limit_bytes = max(0, int(memory_limit_bytes))
        self.log_level = log_level
        self.info: dict[str, Any] = {}  # what the child's warm-up reported (e.g. the model it loaded)
        self._proc: Any = None
        self._conn: Any = None
        self._ready = False

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ready(self) -> bool:
        return self._ready and self.alive

    def start(self) -> None:
        """Start the child (if it is not running); :meth:`wait_ready` waits for its warm-up."""
        if self.alive:
            return
        self._discard()
        # A fresh interpreter (no threads or locks inherited from this one) that asks for the
        # parent-death signal before it imports anything heavy, in its own process group.
        ours, theirs = socket.socketpair()
        spec = {"fd": theirs.fileno(), "factory": self.factory, "warm_up": self.warm_up,
                "data_dir": str(self.data_dir), "parent": os.getpid(), "log_level": self.log_level,
                "name": self.name}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "tmik_common.task_child", json.dumps(spec)],
                                    pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                    process_group=0, close_fds=True)
        finally:
            theirs.close()
        self._proc, self._conn, self._ready = proc, Connection(ours.detach()), False
        log.info("%s: task process started (pid %d)", self.name, proc.pid)

    def wait_ready(self, timeout: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait for the child's warm-up; False on timeout, on ``stop()``, or when the child died (it is
        then gone; call :meth:`start` again)."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            if not self.alive:
                log.error("%s: task process ended during its warm-up (%s)", self.name,
                          describe_exit(self._proc.returncode if self._proc else None))
                self._discard()
                return False
            if stop() or time.monotonic() > deadline:
                return False
            try:
                if self._conn.poll(POLL_S):
                    message = self._conn.recv()
                    if message[0] == "ready":
                        self.info = dict(message[1] or {})
                        self._ready = True
            except (EOFError, OSError):
                continue  # the child died; the check above reports it
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to exit; kill its process group if it does not within ``timeout``."""
        if self._proc is None:
            return
        if self.alive:
            try:
                self._conn.send(("stop",))
            except (OSError, ValueError):
                pass
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._discard()

    def _discard(self) -> None:
        """Kill what is left of the child's group and forget it."""
        if self._proc is not None:
            kill_group(self._proc.pid)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                log.error("%s: task process %d did not end after SIGKILL", self.name, self._proc.pid)
            if self._conn is not None:
                self._conn.close()
        self._proc, self._conn, self._ready = None, None, False

    # -- one task -----------------------------------------------------------------------------

    def run(self, task_id: str, request: Mapping[str, Any], *, progress: Callable[[str, float], None],
            cancelled: Callable[[], bool]) -> dict[str, str]:
        """Run one task (``request``: ``job_id``, ``type``, ``input``, ``params``) to its end; its outputs.

        ``progress(stage, fraction)`` is called with the child's reports; ``cancelled()`` is polled.
        Raises :class:`TaskFailed`, :class:`TaskCrashed`, :class:`TaskOutOfMemory` or
        :class:`TaskCancelled`. After a crash, an out-of-memory kill or a forced cancel the child
        is gone; :meth:`start` makes a new one.
        """
        if not self.ready:
            raise RuntimeError("the task process is not ready")
        self._conn.send(("run", task_id, dict(request)))
        stage = "starting"
        cancel_sent: float | None = None
        next_memory_check = time.monotonic()
        while True:
            try:
                # Every report that is waiting, then the checks below: a chatty task must not starve them.
                waited = False
                while self._conn.poll(0 if waited else POLL_S):
                    waited = True
                    message = self._conn.recv()
                    kind = message[0]
                    if kind == "progress":
                        stage = str(message[1])
                        progress(stage, message[2])
                    elif kind == "done":
                        return dict(message[1])
                    elif kind == "failed":
                        raise TaskFailed(message[1]["code"], message[1]["message"])
                    elif kind == "cancelled":
                        raise TaskCancelled()
                    if time.monotonic() >= next_memory_check:
                        break
            except (EOFError, OSError):
                pass  # the pipe broke: the child is dead; the check below says how
            if not self.alive:
                try:  # what it said before it died: the stage it was in
                    while self._conn.poll(0):
                        message = self._conn.recv()
                        if message[0] == "progress":
                            stage = str(message[1])
                except (EOFError, OSError):
                    pass
                how = describe_exit(self._proc.returncode)
                self._discard()
                if cancel_sent is not None:
                    raise TaskCancelled()
                log.error("%s: task %s: the task process was %s during %r", self.name, task_id, how, stage)
                raise TaskCrashed("task_crashed", f"the task's process was {how} during {stage!r}; the service "
                                  "is still running. Try again; if it happens again, report it with the job id.")
            now = time.monotonic()
            if cancel_sent is None and cancelled():
                self._conn.send(("cancel",))
                cancel_sent = now
            elif cancel_sent is not None and now - cancel_sent > CANCEL_GRACE_S:
                log.warning("%s: task %s did not stop within %.0f s of its cancel; killing its process",
                            self.name, task_id, CANCEL_GRACE_S)
                self._discard()
                raise TaskCancelled()
            if self.memory_limit_bytes and now >= next_memory_check:
                next_memory_check = now + MEMORY_CHECK_S
                used = group_rss_bytes(self._proc.pid)
                if used > self.memory_limit_bytes:
                    self._discard()
                    limit_mb = self.memory_limit_bytes / 2**20
                    log.error("%s: task %s used %.0f MB (limit %.0f MB) during %r; stopped", self.name, task_id,
                              used / 2**20, limit_mb, stage)
                    raise TaskOutOfMemory("task_out_of_memory", f"the task needed more than {limit_mb:.0f} MB of "
                                          f"memory (TASK_MEMORY_LIMIT_MB) during {stage!r} and was stopped; use a "
                                          "shorter or smaller input, or raise the limit")


# -- the child's side ------------------------------------------------------------------------------


def child_main(spec: dict[str, Any]) -> None:
    """The child (``python -m tmik_common.task_child``, which has already asked for the parent-death
    signal): build the task types, warm up, then run tasks until told to stop or the socket closes."""
    conn = Connection(spec["fd"])
    factory, warm_up, data_dir = spec["factory"], spec.get("warm_up"), spec["data_dir"]
    log_level, name = spec.get("log_level", "INFO"), spec.get("name", "task-process")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from .env import LOG_FORMAT

    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    from .tasks import Cancelled, TaskRequest, error_of
    from .warmup import cache_lock

    task_types = import_ref(factory)()
    info: dict[str, Any] = {}
    if warm_up:
        started = time.perf_counter()
        with cache_lock():  # compiling numba caches is not safe from several processes at once
            info = dict(import_ref(warm_up)() or {})
        logging.getLogger(__name__).info("%s: warm-up done in %.1f s", name, time.perf_counter() - started)
    conn.send(("ready", info))
    base = Path(data_dir)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "stop":
            return
        if message[0] != "run":
            continue
        _, task_id, request = message

        def progress(stage: str, fraction: float, task_id: str = task_id) -> None:
            conn.send(("progress", str(stage), float(fraction) if isinstance(fraction, int | float) else 0.0))
            while conn.poll():
                if conn.recv()[0] == "cancel":
                    raise Cancelled(f"task {task_id} cancelled")

        try:
            task_type = task_types[request["type"]]
            work = task_type.prepare(TaskRequest(job_id=request["job_id"], type=request["type"],
                                                 input=request.get("input") or {},
                                                 params=request.get("params") or {}), base)
            outputs = work(progress)
        except Cancelled:
            conn.send(("cancelled",))
            continue
        except Exception as exc:  # reported to the parent, which fails the task
            error = error_of(exc)
            if error["code"] == "internal_error":
                logging.getLogger(__name__).exception("%s: task %s failed unexpectedly", name, task_id)
            conn.send(("failed", error))
            continue
        conn.send(("done", dict(outputs)))
