"""The consent lifecycle reaches outputs (issue 13 item 3): erased subjects stay as tombstones
(`consent_subject.erased_at/erased_by`), an erasure keeps only keyed fingerprints of the reference photos
(`consent_erased_fingerprint`, to stop the same photo re-enrolling without new consent), and a generation records why
its video is gone (`output_deleted_reason`: deleted, subject_erased, retention_expired) and when its client was told
the video is withheld because consent was revoked or expired (`withdrawn_at`).

Each step is skipped when the database already has it: a database made by `create_all` from these models is adopted
at an earlier revision (service/migrations recognises releases up to 0003) and then upgraded through this one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    subject_columns = _columns("consent_subject")
    if "erased_at" not in subject_columns:
        with op.batch_alter_table("consent_subject") as batch:
            batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
            batch.add_column(sa.Column("erased_by", sa.String(length=255), nullable=True))
    generation_columns = _columns("service_generation")
    if "output_deleted_reason" not in generation_columns:
        with op.batch_alter_table("service_generation") as batch:
            batch.add_column(sa.Column("output_deleted_reason", sa.String(length=40), nullable=True))
            batch.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
    if "consent_erased_fingerprint" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "consent_erased_fingerprint",
            sa.Column("fingerprint", sa.String(length=64), nullable=False),
            sa.Column("subject_id", sa.String(length=40), nullable=False),
            sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(["subject_id"], ["consent_subject.id"]),
            sa.PrimaryKeyConstraint("fingerprint"),
        )
        op.create_index(
            "ix_consent_erased_fingerprint_subject_id", "consent_erased_fingerprint", ["subject_id"]
        )


def downgrade() -> None:
    op.drop_table("consent_erased_fingerprint")
    with op.batch_alter_table("service_generation") as batch:
        batch.drop_column("withdrawn_at")
        batch.drop_column("output_deleted_reason")
    with op.batch_alter_table("consent_subject") as batch:
        batch.drop_column("erased_by")
        batch.drop_column("erased_at")
