"""Task records kept as files on the shared volume, so every replica of a service sees every task.

Layout, under ``SHARED_DATA_DIR/tasks/<service>/``:

``<task_id>.json``
    the task's record (what ``GET /v1/tasks/<id>`` shows, plus the request and who runs it),
    replaced atomically (write a temporary file, then rename), so a reader never sees half of it;
``queue/<created_ns>-<task_id>``
    an empty file per task waiting to run; replicas take them oldest first;
``<task_id>.claim``
    created with ``O_EXCL`` by the one replica that runs the task: the claim is the lock, so no
    task runs twice however many replicas poll the queue;
``<task_id>.cancel``
    created by whichever replica is asked to cancel; the replica running the task sees it at the
    task's next checkpoint.

One writer per record at a time: the submitting replica until the task is claimed, then the
claimant (a cancel is a separate marker, never a write to someone else's record). The one
exception is a task whose claimant died: any replica may then mark it failed
(:meth:`TaskStore.mark_lost`). Plain POSIX files work on a Docker volume and on NFS alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["TASK_ID_RE", "TaskStore"]

TASK_ID_RE = re.compile(r"[0-9a-f]{32}")


class TaskStore:
    """The task files of one service under ``data_dir/tasks/<service>``."""

    def __init__(self, data_dir: Path, service: str):
        self.root = Path(data_dir) / "tasks" / service
        self.queue_dir = self.root / "queue"
        self.queue_dir.mkdir(parents=True, exist_ok=True)

    # -- paths ----------------------------------------------------------------------------

    def _path(self, task_id: str, suffix: str) -> Path | None:
        if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
            return None  # never a path built from an arbitrary string
        return self.root / f"{task_id}{suffix}"

    # -- records --------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        """Store ``record`` (it must carry a valid ``task_id``) atomically."""
        path = self._path(record["task_id"], ".json")
        if path is None:
            raise ValueError(f"not a task id: {record['task_id']!r}")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    def read(self, task_id: str) -> dict[str, Any] | None:
        """The record, or None when there is no such task (or ``task_id`` is not one)."""
        path = self._path(task_id, ".json")
        if path is None:
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # only a crash mid-write by a non-atomic writer could do this
            log.warning("unreadable task record %s", path)
            return None

    def records(self) -> list[dict[str, Any]]:
        """Every record, in no particular order."""
        out = []
        for entry in os.scandir(self.root):
            if entry.name.endswith(".json") and not entry.name.startswith("."):
                record = self.read(entry.name[:-5])
                if record is not None:
                    out.append(record)
        return out

    def delete(self, task_id: str) -> None:
        """Remove every file of the task."""
        for suffix in (".json", ".claim", ".cancel"):
            path = self._path(task_id, suffix)
            if path is not None:
                path.unlink(missing_ok=True)
        self._unqueue(task_id)

    # -- the queue ------------------------------------------------------------------------

    def enqueue(self, record: dict[str, Any]) -> None:
        """Store a new task's record and put it at the back of the queue."""
        self.write(record)
        (self.queue_dir / f"{time.time_ns():020d}-{record['task_id']}").touch()

    def queued(self) -> list[str]:
        """Ids of the tasks waiting to run, oldest first."""
        names = sorted(e.name for e in os.scandir(self.queue_dir) if not e.name.startswith("."))
        return [name.split("-", 1)[1] for name in names if "-" in name]

    def queue_length(self) -> int:
        return sum(1 for e in os.scandir(self.queue_dir) if not e.name.startswith("."))

    def _unqueue(self, task_id: str) -> None:
        for entry in self.queue_dir.glob(f"*-{task_id}"):
            entry.unlink(missing_ok=True)

    def claim(self, task_id: str, owner: dict[str, Any]) -> bool:
        """Take the task for ``owner``; False when another replica (or a cancel) took it first."""
        path = self._path(task_id, ".claim")
        if path is None:
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self._unqueue(task_id)
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(owner, fh)
        self._unqueue(task_id)
        return True

    # -- cancel ---------------------------------------------------------------------------

    def request_cancel(self, task_id: str) -> None:
        path = self._path(task_id, ".cancel")
        if path is not None:
            path.touch()

    def cancel_requested(self, task_id: str) -> bool:
        path = self._path(task_id, ".cancel")
        return path is not None and path.exists()

    # -- a claimant that died ---------------------------------------------------------------

    def mark_lost(self, task_id: str, owner_instance: str, error: dict[str, str], now: float) -> bool:
        """Mark a running task whose claimant is gone as failed with ``error``; False if it changed meanwhile."""
        record = self.read(task_id)
        if record is None or record.get("state") != "running":
            return False
        if (record.get("owner") or {}).get("instance") != owner_instance:
            return False
        record.update(state="failed", stage="failed", error=error, updated_at=now, finished_at=now)
        with contextlib.suppress(FileNotFoundError):
            self.write(record)
        return True
