"""Job leases (issue 10, issue 14): who runs a job and until when, so a restarting or second API replica, or a
Celery worker, never re-runs a job that is alive elsewhere; and when a queued job was last sent to the broker.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_generation") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_service_generation_lease_expires_at", ["lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("service_generation") as batch:
        batch.drop_index("ix_service_generation_lease_expires_at")
        for name in ("enqueued_at", "heartbeat_at", "lease_expires_at", "lease_owner"):
            batch.drop_column(name)
