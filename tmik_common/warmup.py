"""Numba's on-disk caches, filled once and safely: ``python -m tmik_common.warmup``.

librosa and the analysis compile their numba functions on first use and cache them on disk
(``cache=True``). Processes that compile the same ``@guvectorize`` function at the same time can
leave a kernel and its wrapper from different compilations, and every later call then crashes
with SIGSEGV (numba issue 10128, librosa issue 1998). So:

- ``make venv`` and each image build run this module once, in one process, so a new machine
  starts with complete caches and later processes only read them;
- every process that compiles (the services' task processes, the CLI) does its warm-up inside
  :func:`cache_lock`, an exclusive file lock beside the cache, so two first uses never overlap.

:func:`warm_all` runs each installed service's warm-up (:data:`WARMERS`), which reaches every
numba function its tasks use (the analysis, pYIN for the take's pitch check, the peak pickers)
on small synthetic signals; ``tests/test_numba_cache.py`` checks that a whole job afterwards
writes nothing to the cache.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["WARMERS", "cache_lock", "lock_path", "warm_all"]

_local = threading.local()
_thread_lock = threading.RLock()


def lock_path() -> Path:
    """The lock file: in ``NUMBA_CACHE_DIR`` when set, else in the project's cache (``TMIK_CACHE_DIR``)."""
    folder = os.environ.get("NUMBA_CACHE_DIR") or os.environ.get("TMIK_CACHE_DIR") or "~/.cache/tmik"
    path = Path(folder).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path / "numba-compile.lock"


@contextmanager
def cache_lock() -> Iterator[None]:
    """Hold the machine-wide numba compile lock (re-entrant within a process)."""
    with _thread_lock:
        depth = getattr(_local, "depth", 0)
        if depth:
            _local.depth = depth + 1
            try:
                yield
            finally:
                _local.depth -= 1
            return
        with open(lock_path(), "a+") as fh:
            t0 = time.perf_counter()
            fcntl.flock(fh, fcntl.LOCK_EX)
            waited = time.perf_counter() - t0
            if waited > 1.0:
                log.info("waited %.1f s for another process to finish compiling numba code", waited)
            _local.depth = 1
            try:
                yield
            finally:
                _local.depth = 0
                fcntl.flock(fh, fcntl.LOCK_UN)


# Each service's own warm-up, by name: whichever of them is installed here (an image holds one
# service) is warmed; tmik_common itself imports neither.
WARMERS = {
    "analysis": "tmik_bgm_conditional_melody_generation.analysis:warm_up",
    "vocal": "tmik_make_vocal_mix.qc:warm_up",
}


def warm_all() -> dict[str, float]:
    """Every numba function of the installed services, compiled into the cache under :func:`cache_lock`;
    seconds per part."""
    from .isolation import import_ref

    seconds: dict[str, float] = {}
    with cache_lock():
        for name, ref in WARMERS.items():
            module = ref.split(":", 1)[0]
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if found:
                seconds[name] = float(import_ref(ref)())
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmik_common.warmup",
                                     description="Fill numba's on-disk caches for this installation, safely.")
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    parts = warm_all()
    cache = os.environ.get("NUMBA_CACHE_DIR") or "numba's default (__pycache__ beside each package)"
    print(f"numba caches warm in {time.perf_counter() - t0:.1f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()) + f"); cache: {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
