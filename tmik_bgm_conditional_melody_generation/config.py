"""The melody service's configuration: every setting comes from an environment variable.

Each variable is documented in the repository's ``.env.example``. Values are read when
:func:`load` is called, so tests can set the environment first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tmik_common.env import env_float, env_int, env_str, log_level, shared_data_dir, task_memory_limit_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    shared_data_dir: Path
    host: str
    port: int
    max_audio_seconds: float
    min_audio_seconds: float
    task_workers: int
    task_memory_limit_bytes: int  # one task's processes are stopped beyond this (0: no limit)
    log_level: str


def melody_checkpoint() -> str | None:
    """MELODY_CHECKPOINT: a checkpoint file to use instead of the automatic choice (see checkpoint.py)."""
    return env_str("MELODY_CHECKPOINT", "") or None


def load() -> Config:
    """Read the service configuration from the environment."""
    return Config(
        shared_data_dir=shared_data_dir(),
        host=env_str("MELODY_SERVICE_HOST", "127.0.0.1"),
        port=env_int("MELODY_SERVICE_PORT", 8001),
        max_audio_seconds=env_float("MAX_AUDIO_SECONDS", 900.0),
        min_audio_seconds=env_float("MIN_AUDIO_SECONDS", 5.0),
        task_workers=max(1, env_int("MELODY_TASK_WORKERS", 1)),
        task_memory_limit_bytes=task_memory_limit_bytes(),
        log_level=log_level(),
    )
