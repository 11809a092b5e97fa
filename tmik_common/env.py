"""Reading numbers from environment variables, the same way in every service's config module."""

from __future__ import annotations

import math
import os


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
