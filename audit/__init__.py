"""Append-only, hash-chained audit log with signed checkpoints (RFC 6962 hashing, RFC 8785 canonical JSON)."""

# The names below are loaded on first use (PEP 562): `from audit.errors import ...` (service/errors.py, the CLI's
# start) must not pay for SQLModel/SQLAlchemy, which the log and its tables import.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it
_EXPORTS = {
    "canonical_json": "audit.canonical",
    "canonical_text": "audit.canonical",
    "GENESIS_HASH": "audit.chain",
    "ChainVerifier": "audit.chain",
    "compute_entry_hash": "audit.chain",
    "AuditError": "audit.errors",
    "CanonicalizationError": "audit.errors",
    "ChainBroken": "audit.errors",
    "CheckpointMismatch": "audit.errors",
    "InvalidAuditEvent": "audit.errors",
    "MissingEntry": "audit.errors",
    "SigningKeyError": "audit.errors",
    "UnsupportedDatabase": "audit.errors",
    "VerificationError": "audit.errors",
    "InvalidSequence": "audit.errors",
    "WitnessMismatch": "audit.errors",
    "WitnessUnavailable": "audit.errors",
    "FileWitness": "audit.witness",
    "key_id_for": "audit.keys",
    "load_or_create_signing_key": "audit.keys",
    "KNOWN_ACTIONS": "audit.log",
    "OUTCOMES": "audit.log",
    "AuditLog": "audit.log",
    "VerifyReport": "audit.log",
    "utc_timestamp": "audit.log",
    "verify_checkpoint_signature": "audit.log",
    "AUDIT_KIND": "audit.models",
    "CHECKPOINT_KIND": "audit.models",
    "AuditCheckpoint": "audit.models",
    "AuditEvent": "audit.models",
}

if TYPE_CHECKING:
    from audit.canonical import canonical_json, canonical_text
    from audit.chain import GENESIS_HASH, ChainVerifier, compute_entry_hash
    from audit.errors import (
        AuditError,
        CanonicalizationError,
        ChainBroken,
        CheckpointMismatch,
        InvalidAuditEvent,
        InvalidSequence,
        MissingEntry,
        SigningKeyError,
        UnsupportedDatabase,
        VerificationError,
        WitnessMismatch,
        WitnessUnavailable,
    )
    from audit.keys import key_id_for, load_or_create_signing_key
    from audit.log import KNOWN_ACTIONS, OUTCOMES, AuditLog, VerifyReport, utc_timestamp, verify_checkpoint_signature
    from audit.models import AUDIT_KIND, CHECKPOINT_KIND, AuditCheckpoint, AuditEvent
    from audit.witness import FileWitness


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


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
    "InvalidSequence",
    "WitnessMismatch",
    "WitnessUnavailable",
    "FileWitness",
    "canonical_json",
    "canonical_text",
    "compute_entry_hash",
    "key_id_for",
    "load_or_create_signing_key",
    "utc_timestamp",
    "verify_checkpoint_signature",
]
