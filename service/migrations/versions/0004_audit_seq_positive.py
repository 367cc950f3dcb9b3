"""Audit sequence numbers are 1..n: a CHECK (`seq > 0`) refuses a row outside every checkpoint (issue 14 item 5).

An upgrade never fails on a log that already holds such a row: the table is then left as it is, with a warning, and
`audit verify` names the row (adding the constraint would need every row to pass; SQLite adds it by copying the table
in batch mode). A database made by `create_all` after the constraint reached the models has it already.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ck_audit_event_seq_positive"
log = logging.getLogger("provatar.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    if NAME in {c["name"] for c in sa.inspect(bind).get_check_constraints("audit_event")}:
        return
    if bind.execute(sa.text("SELECT count(*) FROM audit_event WHERE seq <= 0")).scalar_one():
        log.warning("audit_event holds rows with seq <= 0 (run `provatar audit verify`); %s not added", NAME)
        return
    with op.batch_alter_table("audit_event") as batch:
        batch.create_check_constraint(NAME, "seq > 0")


def downgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_constraint(NAME, type_="check")
