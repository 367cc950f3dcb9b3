"""Append-only, hash-chained audit log with signed checkpoints (RFC 6962 hashing, RFC 8785 canonical JSON)."""

from audit.canonical import canonical_json, canonical_text
from audit.chain import GENESIS_HASH, ChainVerifier, compute_entry_hash
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
    KNOWN_ACTIONS,
    OUTCOMES,
    AuditLog,
    VerifyReport,
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
    "ChainVerifier",
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
