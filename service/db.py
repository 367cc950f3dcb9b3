"""Database engine and sessions. The engine is built from settings and passed around, never a module global,
so tests and commands can point at different databases in one process."""

from __future__ import annotations

from sqlalchemy import event, inspect, text
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
    _upgrade(engine)


# Columns added to existing tables after their first release, by table. `create_all` creates missing tables but
# never alters one, so an older database gets them here (a stop-gap until migrations arrive with issue 10).
_ADDED_COLUMNS = {"service_generation": ("cancel_requested_at", "output_deleted_at")}


def _upgrade(engine: Engine) -> None:
    for table_name, columns in _ADDED_COLUMNS.items():
        table = SQLModel.metadata.tables[table_name]
        present = {c["name"] for c in inspect(engine).get_columns(table_name)}
        with engine.begin() as conn:
            for name in columns:
                if name not in present:
                    kind = table.c[name].type.compile(dialect=engine.dialect)
                    conn.execute(text(f'ALTER TABLE {table_name} ADD COLUMN "{name}" {kind}'))
    if engine.dialect.name == "postgresql":
        # SQLAlchemy made JobStatus a native enum type; a value added to JobStatus must be added to the type.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ALTER TYPE jobstatus ADD VALUE IF NOT EXISTS 'cancelled'"))
