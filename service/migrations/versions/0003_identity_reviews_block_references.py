"""Identity review queue and multi-photo block list (wip-id): a borderline likeness waits for a consent officer's
decision (`consent_identity_review`); every photo of a blocked identity keeps its own embedding
(`consent_blocked_reference`).

Blocked identities made earlier get their one embedding as their first reference row, as
`safeguards.blocklist.add_block_references` would do on their first new photo.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_blocked_reference",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("blocked_id", sa.String(length=40), nullable=False),
        sa.Column("embedding", sa.JSON(), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["blocked_id"], ["consent_blocked_identity.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_blocked_reference_blocked_id", "consent_blocked_reference", ["blocked_id"])
    op.execute(
        "INSERT INTO consent_blocked_reference (blocked_id, embedding, embedder, photo_sha256, created_at) "
        "SELECT id, embedding, embedder, photo_sha256, created_at FROM consent_blocked_identity ORDER BY created_at"
    )

    op.create_table(
        "consent_identity_review",
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("photo_sha256", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("blocked_identity_id", sa.String(length=40), nullable=True),
        sa.Column("distance", sa.Float(), nullable=False),
        sa.Column("match_threshold", sa.Float(), nullable=False),
        sa.Column("review_threshold", sa.Float(), nullable=False),
        sa.Column("quality_issues", sa.JSON(), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("generation_id", sa.String(length=40), nullable=True),
        sa.Column("decision_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.Column("justification", sa.String(length=2000), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["blocked_identity_id"], ["consent_blocked_identity.id"]),
        sa.ForeignKeyConstraint(["subject_id"], ["consent_subject.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_identity_review_photo_sha256", "consent_identity_review", ["photo_sha256"])
    op.create_index("ix_consent_identity_review_status", "consent_identity_review", ["status"])
    op.create_index("ix_consent_identity_review_subject_id", "consent_identity_review", ["subject_id"])


def downgrade() -> None:
    op.drop_table("consent_identity_review")
    op.drop_table("consent_blocked_reference")
