"""The first release's schema (audit log, consent registry, API clients, generation jobs), as `create_all` made it.

A database made before migrations with exactly these tables is stamped 0001 (service.migrations.recognise_release).

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# SQLAlchemy stores an Enum's member names; on SQLite as VARCHAR(longest name), on PostgreSQL as a native type.
JOB_STATUS_1 = ("queued", "running", "succeeded", "denied", "failed")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("origin", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("frontier", sa.JSON(), nullable=False),
        sa.Column("signed_at", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("origin"),
    )
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=255), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_audit_event_action_seq", "audit_event", ["action", "seq"])
    op.create_index("ix_audit_event_actor_seq", "audit_event", ["actor", "seq"])
    op.create_index("ix_audit_event_request_id", "audit_event", ["request_id"])
    op.create_index("ix_audit_event_subject_seq", "audit_event", ["subject", "seq"])
    op.create_index("ix_audit_event_ts", "audit_event", ["ts"])

    op.create_table(
        "consent_blocked_identity",
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "consent_subject",
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("store_photos", sa.Boolean(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "consent_record",
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("allowed_clients", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence_sha256", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("granted_by", sa.String(length=255), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.Column("revocation_reason", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(["subject_id"], ["consent_subject.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_record_granted_at", "consent_record", ["granted_at"])
    op.create_index("ix_consent_record_subject_id", "consent_record", ["subject_id"])
    op.create_table(
        "consent_subject_reference",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("photo_path", sa.String(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subject_id"], ["consent_subject.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_subject_reference_subject_id", "consent_subject_reference", ["subject_id"])

    op.create_table(
        "service_client",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )
    op.create_table(
        "service_generation",
        sa.Column("subject_id", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("status", sa.Enum(*JOB_STATUS_1, name="jobstatus"), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("error_code", sa.String(), nullable=True),
        sa.Column("error_message", sa.String(), nullable=True),
        sa.Column("consent_record_id", sa.String(), nullable=True),
        sa.Column("policy_decision_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("watermark_tag", sa.BigInteger(), nullable=False),
        sa.Column("photo_path", sa.String(), nullable=False),
        sa.Column("audio_path", sa.String(), nullable=False),
        sa.Column("output_path", sa.String(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("manifest_json", sa.String(), nullable=True),
        sa.Column("audit_seq", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_generation_watermark_tag", "service_generation", ["watermark_tag"], unique=True)


def downgrade() -> None:
    for table in (
        "service_generation",
        "service_client",
        "consent_subject_reference",
        "consent_record",
        "consent_subject",
        "consent_blocked_identity",
        "audit_event",
        "audit_checkpoint",
    ):
        op.drop_table(table)  # its indexes go with it
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TYPE IF EXISTS jobstatus")
