"""Connecting to the jobs database and bringing its schema up to date.

One engine per process. SQLite (the embedded default) runs in WAL mode with a busy timeout, so the
app and several job managers share the file; PostgreSQL is used as it is. :func:`migrate` runs
``alembic upgrade head`` under a lock, so processes that start together do not race.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"
# Any constant: PostgreSQL's advisory lock that serialises migrations across processes and machines.
_MIGRATION_LOCK_ID = 7_420_001
SQLITE_BUSY_MS = 30_000


class DatabaseError(RuntimeError):
    """The database cannot be reached or migrated; the message says which and how to fix it."""


def is_transient(exc: BaseException) -> bool:
    """True for a database fault that goes away by itself: SQLite busy or locked, a PostgreSQL server
    restarting or unreachable, a connection dropped, the pool exhausted. Retry those; never show
    them to a user as they are (they carry SQL)."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def describe(exc: BaseException) -> str:
    """A database fault in one line, without the SQL statement or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {text[:200]}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys and its folder created."""
    try:
        return _make_engine(url)
    except (ArgumentError, ImportError) as exc:  # a malformed URL, or a driver that is not installed
        raise DatabaseError(f"cannot use DATABASE_URL={_safe(url)}: {exc}. Use sqlite:///PATH or "
                            "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB") from exc


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable)"


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # Let SQLAlchemy, not pysqlite, issue BEGIN, so a claim's transaction starts when we say.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            # IMMEDIATE: take the write lock at BEGIN, so read-then-write transactions (claims)
            # wait for each other instead of failing with "database is locked" on upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if is_sqlite(engine):
        db = engine.url.database
        if not db or db == ":memory:":
            yield
            return
        with open(f"{db}.migrate.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
            conn.commit()


def migrate(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine``'s database (idempotent; safe from several processes)."""
    cfg = AlembicConfig(str(ALEMBIC_INI))
    cfg.attributes["configure_logger"] = False
    try:
        with _migration_lock(engine), engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except Exception as exc:  # any driver error: say what to check
        url = engine.url.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot migrate the jobs database at {url}: {exc}. Check DATABASE_URL and that "
                            "the database server is running and reachable.") from exc
    log.info("database schema is up to date (%s)", engine.url.render_as_string(hide_password=True))
