"""Append-only, hash-chained audit log with signed checkpoints (RFC 6962 hashing, RFC 8785 canonical JSON)."""

from audit.canonical import canonical_json, canonical_text
from audit.errors import (
    AuditError,
    CanonicalizationError,
    ChainBroken,
    CheckpointMismatch,
    InvalidAuditEvent,
    MissingEntry,
    SigningKeyError,
    UnsupportedDatabase,
    VerificationError,
)
from audit.keys import key_id_for, load_or_create_signing_key
from audit.log import (
    GENESIS_HASH,
    KNOWN_ACTIONS,
    OUTCOMES,
    AuditLog,
    VerifyReport,
    compute_entry_hash,
    utc_timestamp,
    verify_checkpoint_signature,
)
from audit.models import AUDIT_KIND, CHECKPOINT_KIND, AuditCheckpoint, AuditEvent

__all__ = [
    "AUDIT_KIND",
    "CHECKPOINT_KIND",
    "GENESIS_HASH",
    "KNOWN_ACTIONS",
    "OUTCOMES",
    "AuditCheckpoint",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "CanonicalizationError",
    "ChainBroken",
    "CheckpointMismatch",
    "InvalidAuditEvent",
    "MissingEntry",
    "SigningKeyError",
    "UnsupportedDatabase",
    "VerificationError",
    "VerifyReport",
    "canonical_json",
    "canonical_text",
    "compute_entry_hash",
    "key_id_for",
    "load_or_create_signing_key",
    "utc_timestamp",
    "verify_checkpoint_signature",
]
