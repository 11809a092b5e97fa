"""What the app process shares between its API and its UI: configuration, database, service clients,
the signer of file links and the limit on failed keys (:mod:`app.access`)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from tmik_common.secrets import service_token, shared_secret

from . import config as app_config
from . import db
from .access import MEDIA_KEY_ENV, MEDIA_KEY_FILE, FailureLimiter, LinkSigner
from .services import VocalService


class Unauthorized(PermissionError):
    """No API key, or one that is not configured."""


@dataclass
class AppContext:
    cfg: app_config.Config
    engine: Engine
    sessions: sessionmaker[Session]
    vocal: VocalService
    links: LinkSigner
    # One count for the REST API's keys and the web UI's logins: a guesser cannot switch between them.
    auth_failures: FailureLimiter = field(default_factory=FailureLimiter)

    @property
    def keys_required(self) -> bool:
        return bool(self.cfg.api_keys)

    def owner_for_key(self, key: str | None) -> str | None:
        """The owner id of an API key (what its jobs are filed under); None when keys are off.

        Unauthorized when keys are on and ``key`` is missing or unknown. The id is a fingerprint,
        so the database never holds a key.
        """
        if not self.cfg.api_keys:
            return None
        if key:
            for known in self.cfg.api_keys:
                if hmac.compare_digest(known.encode(), key.encode()):
                    return key_fingerprint(known)
        raise Unauthorized("an API key is required: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
                           if not key else "this API key is not valid")


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def create_context(cfg: app_config.Config | None = None, *, migrate: bool = True) -> AppContext:
    """Connect to the database (migrating it to the latest schema unless told not to)."""
    cfg = cfg or app_config.load()
    for sub in ("input", "melody_results", "vocal_results"):
        (cfg.shared_data_dir / sub).mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(cfg.database_url)
    if migrate:
        db.migrate(engine)
    links = LinkSigner(shared_secret(cfg.shared_data_dir, MEDIA_KEY_FILE, MEDIA_KEY_ENV))
    return AppContext(cfg=cfg, engine=engine, sessions=db.session_factory(engine),
                      vocal=VocalService(cfg.vocal_service_url, min(cfg.service_timeout, 3.0),
                                         token=service_token(cfg.shared_data_dir)), links=links)
