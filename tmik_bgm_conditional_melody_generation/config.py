"""The melody service's configuration: every setting comes from an environment variable.

Each variable is documented in the repository's ``.env.example``. Values are read when
:func:`load` is called, so tests can set the environment first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


@dataclass(frozen=True)
class Config:
    shared_data_dir: Path
    host: str
    port: int
    max_audio_seconds: float
    min_audio_seconds: float
    task_workers: int
    log_level: str


def melody_checkpoint() -> str | None:
    """MELODY_CHECKPOINT: a checkpoint file to use instead of the automatic choice (see checkpoint.py)."""
    return os.environ.get("MELODY_CHECKPOINT", "").strip() or None


def load() -> Config:
    """Read the service configuration from the environment."""
    return Config(
        shared_data_dir=Path(os.environ.get("SHARED_DATA_DIR", str(REPO_ROOT / "shared_data"))).resolve(),
        host=os.environ.get("MELODY_SERVICE_HOST", "127.0.0.1"),
        port=_int("MELODY_SERVICE_PORT", 8001),
        max_audio_seconds=_float("MAX_AUDIO_SECONDS", 900.0),
        min_audio_seconds=_float("MIN_AUDIO_SECONDS", 5.0),
        task_workers=max(1, _int("MELODY_TASK_WORKERS", 1)),
        log_level=os.environ.get("LOG_LEVEL", "INFO").upper(),
    )
