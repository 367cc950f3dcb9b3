"""Column types and ids shared by the safeguards' tables (and the service's): aware-UTC timestamps, random ids.

Times are timezone-aware UTC everywhere; a naive datetime is taken as UTC.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import DateTime, TypeDecorator
from sqlalchemy.engine import Dialect

__all__ = ["UTCDateTime", "as_utc", "new_id", "utc_now"]


def new_id(prefix: str) -> str:
    """A random, unguessable id like `subj_3f9c1a7be0d24c5e` (prefix says what it names)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def as_utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive input is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now(now: datetime | None = None) -> datetime:
    """`now` as aware UTC, or the current time without it (data functions take `now` so tests can fix the clock)."""
    return as_utc(now) if now is not None else datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always reads back timezone-aware UTC, on SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite stores text without a zone: store UTC wall time, so ordering and comparison stay correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)
