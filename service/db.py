"""Database engine and sessions. The engine is built from settings and passed around, never a module global,
so tests and commands can point at different databases in one process."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel, create_engine


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


def create_tables(engine: Engine) -> None:
    """Create every provatar table (idempotent)."""
    import audit.models  # noqa: F401  (registers tables on SQLModel.metadata)
    import safeguards.consent  # noqa: F401
    import service.models  # noqa: F401

    SQLModel.metadata.create_all(engine)
