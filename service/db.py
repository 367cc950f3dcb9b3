"""Database engine and sessions. The engine is built from settings and passed around, never a module global,
so tests and commands can point at different databases in one process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

if TYPE_CHECKING:
    from service.migrations import UpgradeResult


# How long a statement waits for a lock another session holds before it fails (SQLite's busy timeout, PostgreSQL's
# lock_timeout). The failure is answered 503 with Retry-After (service/errors.py); without a bound, a table lock held
# by an operator's session made every request wait on PostgreSQL forever.
LOCK_WAIT_SECONDS = 30


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL and a busy timeout so the worker thread and requests can share it, and
    PostgreSQL a lock timeout, so a held lock is a bounded wait and a clear error, never a hang."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": LOCK_WAIT_SECONDS})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={LOCK_WAIT_SECONDS * 1000}")
            cur.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if url.startswith("postgresql"):
        # Set per connection rather than through `options` in connect_args, which would replace any `options` the
        # URL carries (a search_path, for one).
        @event.listens_for(engine, "connect")
        def _postgres_lock_timeout(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True  # a SET outside any transaction, so it lasts for the session
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            dbapi_conn.autocommit = autocommit

    return engine


def create_tables(engine: Engine) -> UpgradeResult:
    """Bring the database to the newest schema through the migrations (idempotent; see service/migrations).

    An empty database is created from the first revision up; one made by `create_all` before migrations existed
    is recognised, stamped and upgraded."""
    from service.migrations import upgrade  # lazily: Alembic loads only where a database is opened

    return upgrade(engine)
