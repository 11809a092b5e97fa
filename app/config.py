"""The app's and the job manager's configuration: every setting comes from an environment variable.

Each variable is documented in the repository's ``.env.example``. Values are read when
:func:`load` is called, so tests can set the environment first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tmik_common.env import env_float, env_int, env_str, log_level, shared_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    database_url: str
    shared_data_dir: Path
    melody_service_url: str
    vocal_service_url: str
    host: str
    port: int
    max_upload_bytes: int
    min_audio_seconds: float  # shortest and longest accepted upload (the melody service's own limits)
    max_audio_seconds: float
    api_keys: tuple[str, ...]  # empty: no keys needed
    lease_seconds: float  # a worker's hold on a job; renewed every third of it
    poll_seconds: float  # how often an idle job manager looks for work
    max_attempts: int  # a job whose worker died this many times fails
    service_timeout: float  # one HTTP request to a service
    service_wait_seconds: float  # how long a job waits for a service that is down before failing
    stage_timeout: float  # longest one service task may run
    db_retry_seconds: float  # how long a job manager retries a database that is briefly unavailable
    job_workers: int  # jobs one job manager process runs at once
    log_level: str


def _url(name: str, default: str) -> str:
    return env_str(name, default).rstrip("/")


def default_database_url(shared_data_dir: Path) -> str:
    """The embedded default: SQLite in the shared data folder."""
    return f"sqlite:///{shared_data_dir / 'jobs.db'}"


def normalise_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (what hosting providers hand out) use psycopg2, the driver
    this project installs; SQLAlchemy would otherwise look for another one."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def load() -> Config:
    """Read the configuration from the environment; ValueError names a bad variable."""
    shared = shared_data_dir()
    max_mb = env_float("MAX_UPLOAD_MB", 200.0)
    if max_mb <= 0:
        raise ValueError(f"MAX_UPLOAD_MB must be > 0, got {max_mb:g}")
    lease = env_float("JOB_LEASE_SECONDS", 30.0)
    if lease < 2:
        raise ValueError(f"JOB_LEASE_SECONDS must be >= 2, got {lease:g}")
    attempts = env_int("JOB_MAX_ATTEMPTS", 3)
    if attempts < 1:
        raise ValueError(f"JOB_MAX_ATTEMPTS must be >= 1, got {attempts}")
    keys = tuple(k.strip() for k in env_str("API_KEYS", "").split(",") if k.strip())
    return Config(
        database_url=normalise_database_url(env_str("DATABASE_URL", "") or default_database_url(shared)),
        shared_data_dir=shared,
        melody_service_url=_url("MELODY_SERVICE_URL", "http://127.0.0.1:8001"),
        vocal_service_url=_url("VOCAL_SERVICE_URL", "http://127.0.0.1:8002"),
        host=env_str("APP_HOST", "127.0.0.1"),
        port=env_int("APP_PORT", 8080),
        max_upload_bytes=int(max_mb * 1024 * 1024),
        min_audio_seconds=env_float("MIN_AUDIO_SECONDS", 5.0),
        max_audio_seconds=env_float("MAX_AUDIO_SECONDS", 900.0),
        api_keys=keys,
        lease_seconds=lease,
        poll_seconds=max(0.05, env_float("JOB_POLL_SECONDS", 1.0)),
        max_attempts=attempts,
        service_timeout=max(1.0, env_float("SERVICE_TIMEOUT_SECONDS", 10.0)),
        service_wait_seconds=max(0.0, env_float("SERVICE_WAIT_SECONDS", 900.0)),
        stage_timeout=max(10.0, env_float("STAGE_TIMEOUT_SECONDS", 1800.0)),
        db_retry_seconds=max(0.0, env_float("DB_RETRY_SECONDS", 300.0)),
        job_workers=max(1, env_int("JOB_WORKERS", 2)),
        log_level=log_level(),
    )
