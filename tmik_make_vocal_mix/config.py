"""The vocal-mix service's configuration: every setting comes from an environment variable.

Each variable is documented in the repository's ``.env.example``. Values are read when
:func:`load` is called, so tests can set the environment first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tmik_common.env import env_float, env_int, env_str, log_level, shared_data_dir, task_memory_limit_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    shared_data_dir: Path
    host: str
    port: int
    task_workers: int
    task_memory_limit_bytes: int  # one task's processes are stopped beyond this (0: no limit)
    target_lufs: float  # the master's integrated loudness when a task does not ask for another
    true_peak_db: float  # the master's true-peak ceiling (dBTP)
    intelligibility_seconds: float  # singing each take's word check listens to (inf: whole song; 0: off)
    takes: int  # takes a render sings when its task does not say (1..5)
    log_level: str


def load() -> Config:
    """Read the service configuration from the environment; ValueError names a bad variable."""
    target = env_float("TARGET_LUFS", -14.0)
    if not -30.0 <= target <= -6.0:
        raise ValueError(f"TARGET_LUFS must be within -30..-6, got {target:g}")
    peak = env_float("TRUE_PEAK_DBTP", -1.0)
    if not -12.0 <= peak <= 0.0:
        raise ValueError(f"TRUE_PEAK_DBTP must be within -12..0, got {peak:g}")
    takes = env_float("TAKES", 3)
    if takes != int(takes) or not 1 <= takes <= 5:
        raise ValueError(f"TAKES must be a whole number 1..5, got {takes:g}")
    seconds = env_float("QC_INTELLIGIBILITY_SECONDS", math.inf)  # unset: the whole song
    if seconds < 0:
        raise ValueError(f"QC_INTELLIGIBILITY_SECONDS must be 0 (off) or more, got {seconds:g}")
    return Config(
        shared_data_dir=shared_data_dir(),
        host=env_str("VOCAL_SERVICE_HOST", "127.0.0.1"),
        port=env_int("VOCAL_SERVICE_PORT", 8002),
        task_workers=max(1, env_int("VOCAL_TASK_WORKERS", 1)),
        target_lufs=target,
        true_peak_db=peak,
        intelligibility_seconds=seconds,
        takes=int(takes),
        task_memory_limit_bytes=task_memory_limit_bytes(),
        log_level=log_level(),
    )
