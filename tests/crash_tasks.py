"""Task types that misbehave on purpose, for the process-isolation tests (tests/test_task_isolation.py).

``factory`` of a :class:`tmik_common.tasks.TaskRunner` with ``isolation="process"``: the child
process imports this module by name and runs the work there.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

from tmik_common.tasks import InvalidParams, TaskRequest, TaskType


def _prepare(request: TaskRequest, data_dir: Path):
    kind = request.type
    seconds = float(request.params.get("seconds", 0.1))
    if request.params.get("refuse"):
        raise InvalidParams("invalid_param", "refused by the test")

    def work(progress):
        progress("started", 0.1)
        if kind == "echo":
            return {"pid": str(os.getpid())}
        if kind == "segfault":
            progress("about to crash", 0.5)
            ctypes.string_at(0)  # reads address 0: SIGSEGV, as a broken numba cache does
        if kind == "hog":
            blocks = []
            while True:  # about 100 MB a step, until the runner stops it
                blocks.append(bytearray(100 * 2**20))
                progress("allocating", 0.5)
                time.sleep(0.05)
        if kind == "sleep":  # honours cancel at its checkpoints
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                progress("sleeping", (time.monotonic() - t0) / seconds)
                time.sleep(0.02)
            return {"slept": str(seconds)}
        if kind == "hang":  # never reaches a checkpoint again
            time.sleep(seconds)
            return {}
        if kind == "fail":
            raise RuntimeError("an internal bug")
        raise AssertionError(kind)

    return work


KINDS = ("echo", "segfault", "hog", "sleep", "hang", "fail")


def task_types() -> dict[str, TaskType]:
    return {k: TaskType(k, _prepare) for k in KINDS}


def warm_up() -> dict[str, str]:
    return {"model": f"warmed in {os.getpid()}"}
