"""Database engine and sessions. The engine is built from settings and passed around, never a module global,
so tests and commands can point at different databases in one process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

if TYPE_CHECKING:
    from service.migrations import UpgradeResult


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL and a busy timeout so the worker thread and requests can share it."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine) -> UpgradeResult:
    """Bring the database to the newest schema through the migrations (idempotent; see service/migrations).

    An empty database is created from the first revision up; one made by `create_all` before migrations existed
    is recognised, stamped and upgraded."""
    from service.migrations import upgrade  # lazily: Alembic loads only where a database is opened

    return upgrade(engine)
