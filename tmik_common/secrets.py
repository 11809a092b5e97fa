"""Secrets every process of one deployment shares: the service token, the app's signing key.

A secret comes from its environment variable when that is set (not empty); otherwise from a file
under ``SHARED_DATA_DIR/.secrets/``, created once, readable by its owner only, by whichever
process needs it first. Every process that mounts the shared volume therefore agrees on it with
no configuration (``make run``, ``docker compose up``), and an operator can still pin it.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

SECRETS_DIR = ".secrets"
SERVICE_TOKEN_ENV = "SERVICE_TOKEN"
SERVICE_TOKEN_FILE = "service_token"

__all__ = ["SERVICE_TOKEN_ENV", "service_token", "shared_secret"]


def shared_secret(data_dir: Path, name: str, env: str | None = None, *, nbytes: int = 32) -> str:
    """The secret ``name``: ``$env`` when set and not empty, else ``data_dir/.secrets/name``.

    The file is created atomically (``O_EXCL``; mode 0600, its folder 0700), so processes that start
    together all read the one that won. Raises OSError when the folder cannot be written.
    """
    if env:
        value = (os.environ.get(env) or "").strip()
        if value:
            return value
    folder = Path(data_dir) / SECRETS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name
    for _ in range(50):
        try:
            value = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            value = ""
        if value:
            return value
        tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, path)  # atomic and never overwrites: the first process to get here wins
            log.info("created the shared secret %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    raise OSError(f"could not read or create the secret {path}")


def service_token(data_dir: Path) -> str:
    """The token the job manager sends and the services require (``SERVICE_TOKEN``, or the shared file)."""
    return shared_secret(data_dir, SERVICE_TOKEN_FILE, SERVICE_TOKEN_ENV)
