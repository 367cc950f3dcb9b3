"""Audit tables: `audit_event` (the hash-chained entries) and `audit_checkpoint` (the signed tree head).

Plain column types only (strings, integers, JSON), so the same schema works on SQLite and PostgreSQL and every
hashed value reads back byte-for-byte as it was written. Timestamps are fixed-width UTC ISO-8601 strings
(`2026-01-31T12:00:00.123456Z`): they are part of the hash, and they sort correctly as text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index
from sqlmodel import Field, SQLModel

AUDIT_KIND = "provatar.audit/v1"
CHECKPOINT_KIND = "provatar.audit.checkpoint/v1"
# The fields covered by an entry's hash (everything but `entry_hash`), in declaration order.
HASHED_FIELDS = (
    "seq",
    "event_id",
    "ts",
    "kind",
    "action",
    "actor",
    "subject",
    "outcome",
    "request_id",
    "details",
    "prev_hash",
)


class AuditEvent(SQLModel, table=True):
    """One append-only audit entry. `seq` is assigned by `AuditLog.append` (1..n, no gaps)."""

    __tablename__ = "audit_event"
    __table_args__ = (
        # Sequence numbers are 1..n: a row at 0 or below would sit outside every checkpoint (new databases refuse
        # it; verify() names one found in an older database).
        CheckConstraint("seq > 0", name="ck_audit_event_seq_positive"),
        Index("ix_audit_event_ts", "ts"),
        Index("ix_audit_event_actor_seq", "actor", "seq"),
        Index("ix_audit_event_subject_seq", "subject", "seq"),
        Index("ix_audit_event_action_seq", "action", "seq"),
        Index("ix_audit_event_request_id", "request_id"),
    )

    seq: int = Field(primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False})
    # A UUID, stored as its canonical 36-character text: hashed as text, portable, and readable even if
    # tampered.
    event_id: str = Field(unique=True, max_length=36)
    ts: str = Field(max_length=32)
    kind: str = Field(default=AUDIT_KIND, max_length=64)
    action: str = Field(max_length=64)
    actor: str = Field(max_length=255)
    subject: str | None = Field(default=None, max_length=255)
    outcome: str = Field(max_length=16)
    request_id: str | None = Field(default=None, max_length=255)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields covered by `entry_hash` (everything but the hash itself)."""
        return {name: getattr(self, name) for name in HASHED_FIELDS}

    def to_record(self) -> dict[str, Any]:
        """The entry as exported: the hashed fields plus `entry_hash`."""
        return {**self.hashed_fields(), "entry_hash": self.entry_hash}


class AuditCheckpoint(SQLModel, table=True):
    """The signed head of one log (`origin`): size, last entry hash and Merkle root over all entry hashes.

    One row per origin, rewritten after every append, so that deleting the newest entries is caught: the
    signature covers `size`, and only the service key can sign a smaller one. `frontier` (the Merkle subtree
    roots) is not signed but must fold to the signed `root_hash`, which is checked before the log is extended.
    """

    __tablename__ = "audit_checkpoint"

    origin: str = Field(primary_key=True, max_length=128)
    kind: str = Field(default=CHECKPOINT_KIND, max_length=64)
    size: int = Field(sa_type=BigInteger)
    head_hash: str = Field(max_length=64)
    root_hash: str = Field(max_length=64)
    frontier: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    signed_at: str = Field(max_length=32)
    key_id: str = Field(max_length=128)
    signature: str = Field(max_length=128)

    def signed_fields(self) -> dict[str, Any]:
        """The fields covered by `signature` (canonical JSON of these is what is signed)."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "size": self.size,
            "head_hash": self.head_hash,
            "root_hash": self.root_hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
        }
