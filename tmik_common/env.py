"""Reading settings from environment variables the same way in every process, and starting its logging."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


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
