"""Reading settings from environment variables the same way in every process, and starting its logging."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    """``$name`` with surrounding blanks removed; ``default`` when unset or empty.

    The one rule of every process (and the launcher): a variable set to nothing counts as unset,
    so ``MELODY_SERVICE_URL=`` in ``.env`` means "use the default", never "use no URL".
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


def env_float(name: str, default: float) -> float:
    """``$name`` as a finite number (``default`` when unset or empty); a clear ValueError otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    return value


def env_int(name: str, default: int) -> int:
    """``$name`` as a whole number (a fractional value is truncated)."""
    return int(env_float(name, default))


def shared_data_dir() -> Path:
    """``SHARED_DATA_DIR`` as an absolute path: the one resolution every process uses.

    Unset or empty: ``shared_data/`` in the repository. A relative value is taken from the
    repository root, not from the process' working folder, so the app, the job managers and
    the services always agree on where the files are.
    """
    path = Path(env_str("SHARED_DATA_DIR", "shared_data")).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def task_memory_limit_bytes() -> int:
    """``TASK_MEMORY_LIMIT_MB`` (default 6144; 0: no limit) in bytes: the most one task's processes may hold."""
    mb = env_float("TASK_MEMORY_LIMIT_MB", 6144.0)
    if mb < 0:
        raise ValueError(f"TASK_MEMORY_LIMIT_MB must be >= 0 (0: no limit), got {mb:g}")
    return int(mb * 2**20)


def log_level() -> str:
    """``LOG_LEVEL`` (default INFO), upper-cased; a ValueError names anything else."""
    level = env_str("LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def start_process(name: str, load: Callable[[], T]) -> T | None:
    """The start of every process' ``main()``: read its configuration with ``load`` and set up
    logging at the configured ``log_level`` in the one format all processes share.

    Returns the configuration, or None after printing ``NAME: configuration error: ...`` when a
    variable is bad (the caller then exits with status 2).
    """
    try:
        cfg = load()
    except ValueError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return None
    logging.basicConfig(level=getattr(cfg, "log_level", "INFO"), format=LOG_FORMAT)
    return cfg
