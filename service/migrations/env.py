"""Alembic's environment script. It runs only through service.migrations, which passes an open connection inside
the transaction that holds the database lock; there is no alembic.ini and no URL of its own."""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import DateTime, String
from sqlalchemy.types import TypeDecorator

from service.migrations import include_name, target_metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Render the models' decorated column types (sqlmodel's AutoString and UTCDateTime, consent's UTCDateTime)
    as the plain SQLAlchemy types they store, so a revision never imports code that may change after it."""
    if type_ != "type" or not isinstance(obj, TypeDecorator):
        return False
    impl = obj.impl_instance
    if isinstance(impl, DateTime):
        return f"sa.DateTime(timezone={impl.timezone})"
    if isinstance(impl, String):
        return f"sa.String(length={impl.length})" if impl.length else "sa.String()"
    return False


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `provatar db upgrade` (service.migrations), not the alembic command")
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        include_name=include_name,
        compare_type=True,
        # SQLite cannot ALTER most things in place: batch mode copies the table with the change applied.
        render_as_batch=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic executes this file inside its environment context; a plain import (tools that walk the package) does not.
if hasattr(context, "config"):
    run_migrations()
