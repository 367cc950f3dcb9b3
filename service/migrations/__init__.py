"""Schema migrations (Alembic): bring any provatar database, empty or made before migrations, to the newest schema.

`upgrade(engine)` is what `provatar db upgrade`, `provatar init` and every process start run. It is idempotent and
safe to run from several processes at once: the whole upgrade is one transaction under a database lock (PostgreSQL
advisory lock, SQLite write lock), so a second process waits and then finds the schema at head.

A database created by `SQLModel.metadata.create_all` before migrations existed has tables but no `alembic_version`.
It is recognised by which tables and columns it has, stamped with the revision it matches and upgraded from there;
one that matches no released schema is refused rather than guessed at (`SchemaMismatch`).

The revisions live in `versions/` (shipped in the package). Each one is written for SQLite and PostgreSQL; on SQLite,
changes to existing tables go through Alembic's batch mode (`render_as_batch`), which copies the table.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Enum, MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from service.errors import SchemaMismatch

HERE = Path(__file__).resolve().parent
# Our tables' name prefixes: tables of other applications sharing the database are never compared or touched.
TABLE_PREFIXES = ("audit_", "consent_", "service_")
# A stable 64-bit key for pg_advisory_xact_lock (distinct from the audit log's).
_PG_LOCK_KEY = zlib.crc32(b"provatar.migrations") - 2**31

# What `create_all` made before migrations, release by release: the tables of the first, then what each later one
# added (tables, and columns of `service_generation`), by the revision that creates the same schema.
_FIRST_RELEASE_TABLES = frozenset(
    {
        "audit_event",
        "audit_checkpoint",
        "consent_subject",
        "consent_subject_reference",
        "consent_record",
        "consent_blocked_identity",
        "service_client",
        "service_generation",
    }
)
_LATER_RELEASES: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = (
    # 0002: issue 11's jobs, idempotency keys and webhooks.
    (
        "0002",
        frozenset(
            {
                "service_idempotency_key",
                "service_webhook_endpoint",
                "service_webhook_delivery",
                "service_webhook_attempt",
            }
        ),
        frozenset({"cancel_requested_at", "output_deleted_at"}),
    ),
    # 0003: the identity review queue and multi-photo block list.
    ("0003", frozenset({"consent_identity_review", "consent_blocked_reference"}), frozenset()),
)


@dataclass(frozen=True)
class UpgradeResult:
    before: str | None  # revision before (None: no alembic_version)
    after: str
    adopted: str | None  # the revision a pre-migration database was recognised as and stamped with

    @property
    def changed(self) -> bool:
        return self.before != self.after


def target_metadata() -> MetaData:
    """Every provatar table: importing the model modules registers them on SQLModel.metadata."""
    from sqlmodel import SQLModel

    import audit.models  # noqa: F401
    import safeguards.consent  # noqa: F401
    import safeguards.reviews  # noqa: F401
    import service.models  # noqa: F401

    return SQLModel.metadata


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Compare only our tables (reflected side); the metadata side is always compared in full."""
    if type_ == "table":
        return name is not None and (name.startswith(TABLE_PREFIXES) or name in target_metadata().tables)
    return True


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    heads = script_directory().get_heads()
    if len(heads) != 1:  # two branches each added a revision: a merge revision is needed
        raise SchemaMismatch(f"the migrations have {len(heads)} heads ({', '.join(heads)}); expected one")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with _migration_engine(engine).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> UpgradeResult:
    """Bring the database to the newest revision (no-op when it is there); adopt a pre-migration database."""
    head = head_revision()
    if current_revision(engine) == head:  # the common case at every start: no write lock needed
        return UpgradeResult(head, head, None)
    with _locked(engine) as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        if before == head:
            return UpgradeResult(before, head, None)
        if before is not None and before not in {s.revision for s in script_directory().walk_revisions()}:
            raise SchemaMismatch(
                f"the database is at revision {before}, which this version of provatar does not know "
                "(made by a newer release?)",
                code="database_newer_than_code",
            )
        adopted = None
        if before is None:
            adopted = recognise_release(conn)
            if adopted is not None:
                command.stamp(_config(conn), adopted)
        command.upgrade(_config(conn), "head")
        return UpgradeResult(before, MigrationContext.configure(conn).get_current_revision() or "", adopted)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the schema back to `revision` ("base": no tables), e.g. before running an older release."""
    with _locked(engine) as conn:
        command.downgrade(_config(conn), revision)


def new_revision(message: str) -> Path:
    """(Developers, in a checkout) Write the next revision from the difference between the models and the schema
    the existing revisions make, autogenerated against a scratch SQLite database. Review it before committing:
    SQLite cannot show PostgreSQL-only changes such as a new enum value (`ALTER TYPE ... ADD VALUE`)."""
    import tempfile

    numbers = [int(s.revision) for s in script_directory().walk_revisions() if s.revision.isdigit()]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/revision.db", poolclass=NullPool)
        upgrade(engine)
        with _locked(engine) as conn:
            script = command.revision(_config(conn), message=message, autogenerate=True, rev_id=rev_id)
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


def recognise_release(conn: Connection) -> str | None:
    """The revision whose schema a database made by `create_all` (no alembic_version) has; None when empty."""
    insp = inspect(conn)
    tables = {t for t in insp.get_table_names() if t.startswith(TABLE_PREFIXES)}
    if not tables:
        return None
    missing = sorted(_FIRST_RELEASE_TABLES - tables)
    if missing:
        raise SchemaMismatch(f"the database has provatar tables but not {', '.join(missing)}")
    columns = {c["name"] for c in insp.get_columns("service_generation")}
    revision = "0001"
    for later, new_tables, new_columns in _LATER_RELEASES:
        present = (tables & new_tables) | (columns & new_columns)
        if not present:
            break
        missing = sorted((new_tables | new_columns) - present)
        if missing:
            raise SchemaMismatch(f"the database has part of revision {later}'s schema; missing: {', '.join(missing)}")
        revision = later
    # Since issue 11 the start-up also added 'cancelled' to PostgreSQL's jobstatus type; 0002 adds it if missing,
    # and `provatar db upgrade` reports any difference left after adopting a database.
    return revision


def schema_diff(engine: Engine, metadata: MetaData | None = None) -> list[Any]:
    """Differences between the models and the database, empty when they match: Alembic's autogenerate comparison,
    plus what autogenerate does not compare: CHECK constraints and the labels of PostgreSQL enum types."""
    metadata = metadata if metadata is not None else target_metadata()
    with _migration_engine(engine).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        diff: list[Any] = list(compare_metadata(ctx, metadata))
        diff += _check_constraint_diff(conn, metadata)
        if conn.dialect.name == "postgresql":
            diff += _enum_label_diff(conn, metadata)
        return diff


def _check_constraint_diff(conn: Connection, metadata: MetaData) -> list[tuple[str, str, list[str]]]:
    """Named CHECK constraints by name, unnamed ones by count (SQLAlchemy's own enum/boolean CHECKs are off)."""
    insp = inspect(conn)
    present = set(insp.get_table_names())
    diff = []
    for table in metadata.tables.values():
        if table.name not in present:
            continue  # reported by autogenerate as a missing table
        wanted = [c for c in table.constraints if isinstance(c, CheckConstraint)]
        found = insp.get_check_constraints(table.name)
        found_names = {c.get("name") for c in found if c.get("name")}
        wanted_names = {str(c.name) for c in wanted if c.name}
        missing = sorted(wanted_names - found_names)
        # PostgreSQL names an unnamed CHECK itself (`<table>_<column>_check`): any other found one may be it.
        others = sum(1 for c in found if c.get("name") not in wanted_names)
        unnamed = sum(1 for c in wanted if not c.name) - others
        if missing or unnamed > 0:
            diff.append(("missing_check_constraints", table.name, missing + ["(unnamed)"] * max(0, unnamed)))
    return diff


def _enum_label_diff(conn: Connection, metadata: MetaData) -> list[tuple[str, str, list[str]]]:
    rows = conn.execute(
        text(
            "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
            "WHERE t.typnamespace = current_schema()::regnamespace"
        )
    ).all()
    found: dict[str, set[str]] = {}
    for name, label in rows:
        found.setdefault(name, set()).add(label)
    diff = []
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, Enum) and column.type.name:
                missing = sorted(set(column.type.enums) - found.get(column.type.name, set()))
                if missing:
                    diff.append(("missing_enum_values", column.type.name, missing))
    return diff


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def _migration_engine(engine: Engine) -> Engine:
    """A plain engine on the same database: SQLite without the app's `foreign_keys=ON`, which batch mode's table
    copies cannot run under (and which cannot be switched off inside a transaction)."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine  # an in-memory database exists only on its own engine
    return create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 30})


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the database's write lock, so concurrent starts upgrade one at a time."""
    eng = _migration_engine(engine)
    try:
        with eng.connect() as conn:
            if eng.dialect.name == "sqlite":
                # pysqlite would not wrap DDL in a transaction at all; take the write lock up front and commit
                # the whole upgrade (stamp included) at once, as audit/log.py does for appends.
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            else:
                with conn.begin():
                    if eng.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                    yield conn
    finally:
        if eng is not engine:
            eng.dispose()
