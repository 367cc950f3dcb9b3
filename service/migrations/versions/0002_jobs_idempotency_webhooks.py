"""Jobs as integrators expect (issue 11): cancel and delete of a generation, Idempotency-Key storage, webhooks.

Until now a stop-gap in service/db.py added these columns and the enum value to older databases at start-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("service_generation") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("output_deleted_at", sa.DateTime(timezone=True), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        # A native enum type on PostgreSQL (on SQLite a VARCHAR(9), which 'cancelled' fits). IF NOT EXISTS: a
        # database adopted from the stop-gap era has it already. PostgreSQL >= 12 allows this in a transaction.
        op.execute("ALTER TYPE jobstatus ADD VALUE IF NOT EXISTS 'cancelled'")

    op.create_table(
        "service_idempotency_key",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("generation_id", sa.String(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("client_id", "key"),
    )
    op.create_index("ix_service_idempotency_key_created_at", "service_idempotency_key", ["created_at"])

    op.create_table(
        "service_webhook_endpoint",
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_encrypted", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_webhook_endpoint_client_id", "service_webhook_endpoint", ["client_id"])
    op.create_table(
        "service_webhook_delivery",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.Enum("pending", "succeeded", "failed", name="webhookstatus"), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_webhook_delivery_endpoint_id", "service_webhook_delivery", ["endpoint_id"])
    op.create_index("ix_service_webhook_delivery_next_attempt_at", "service_webhook_delivery", ["next_attempt_at"])
    op.create_index("ix_service_webhook_delivery_status", "service_webhook_delivery", ["status"])
    op.create_table(
        "service_webhook_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_webhook_attempt_delivery_id", "service_webhook_attempt", ["delivery_id"])


def downgrade() -> None:
    for table in (
        "service_webhook_attempt",
        "service_webhook_delivery",
        "service_webhook_endpoint",
        "service_idempotency_key",
    ):
        op.drop_table(table)
    # The first release knows no 'cancelled' job; PostgreSQL cannot remove the enum value, so it stays, unused.
    op.execute("UPDATE service_generation SET status = 'failed' WHERE status = 'cancelled'")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TYPE IF EXISTS webhookstatus")
    with op.batch_alter_table("service_generation") as batch:
        batch.drop_column("output_deleted_at")
        batch.drop_column("cancel_requested_at")
