"""Typed audit errors.

A verifier that answers `False` cannot say what to repair, so every failure is an exception that names the
entry (`seq`) and what mismatched. `code` is a stable snake_case identifier that `service/errors.py` maps to
an exit code / HTTP status; `message` is for humans.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every audit failure."""

    code: str = "audit_error"

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The sequence number of the first entry the problem was found at, when there is one.
        self.seq = seq


class CanonicalizationError(AuditError):
    """A value cannot be written as canonical JSON (NaN/inf, a non-string key, an unsupported type...)."""

    code = "not_canonical_json"


class InvalidAuditEvent(AuditError):
    """append() was called with a malformed field (unknown outcome, empty actor, badly formed action...)."""

    code = "invalid_audit_event"


class SigningKeyError(AuditError):
    """The checkpoint signing key file is unreadable, not an Ed25519 key, or readable by other users."""

    code = "signing_key_error"


class UnsupportedDatabase(AuditError):
    """The engine's dialect has no cross-process append lock implemented (SQLite and PostgreSQL do)."""

    code = "unsupported_database"


class VerificationError(AuditError):
    """Base class of integrity failures found by `AuditLog.verify()` (and refused appends)."""

    code = "audit_verification_failed"


class ChainBroken(VerificationError):
    """Entry `seq` does not hash to what the chain expects: a row was edited, reordered or swapped."""

    code = "chain_broken"

    def __init__(self, seq: int, expected: str, found: str, *, field: str = "entry_hash") -> None:
        super().__init__(
            f"audit entry {seq} is not what the chain expects ({field}: expected {expected}, found {found}); "
            "the row was edited, reordered or swapped",
            seq=seq,
        )
        self.expected = expected
        self.found = found
        self.field = field


class MissingEntry(VerificationError):
    """Entry `seq` is absent although later entries (or the checkpoint) exist: a row was deleted."""

    code = "missing_entry"

    def __init__(self, seq: int, *, found_seq: int | None = None) -> None:
        after = f" (the next row present is {found_seq})" if found_seq is not None else ""
        super().__init__(f"audit entry {seq} is missing{after}; a row was deleted", seq=seq)
        self.found_seq = found_seq


class CheckpointMismatch(VerificationError):
    """The signed checkpoint does not match the log: truncated tail, bad signature, head/root/size
    mismatch."""

    code = "checkpoint_mismatch"

    def __init__(
        self, reason: str, *, seq: int | None = None, expected: str | None = None, found: str | None = None
    ) -> None:
        where = f" at entry {seq}" if seq is not None else ""
        detail = f" (expected {expected}, found {found})" if expected is not None or found is not None else ""
        super().__init__(f"audit checkpoint mismatch{where}: {reason}{detail}", seq=seq)
        self.reason = reason
        self.expected = expected
        self.found = found


class InvalidSequence(VerificationError):
    """A row has a sequence number outside 1..n (zero or negative): it was inserted beside the chain, not by it."""

    code = "invalid_sequence"

    def __init__(self, seq: int) -> None:
        super().__init__(
            f"audit row with seq {seq} exists; sequence numbers start at 1, so it was inserted outside the log "
            "(it would appear in exports and queries without being covered by any checkpoint)",
            seq=seq,
        )


class WitnessMismatch(VerificationError):
    """The database disagrees with the newest checkpoint kept by the witness outside it: the log was emptied,
    rolled back to an older checkpoint, rewritten, or the witness is missing although one was kept."""

    code = "witness_mismatch"

    def __init__(self, reason: str, *, seq: int | None = None) -> None:
        super().__init__(f"audit witness mismatch: {reason}", seq=seq)
        self.reason = reason


class WitnessUnavailable(AuditError):
    """The witness file cannot be written or read (its volume is full, read-only or gone)."""

    code = "witness_unavailable"


class BundleInvalid(VerificationError):
    """An exported evidence bundle does not verify. `check` is the verification step that failed first (`archive`,
    `checkpoint signatures`, `entry chain`...), `reason` a stable snake_case name of what broke there
    (`entries_truncated`, `checkpoint_missing`...), `seq` the entry sequence number or checkpoint size concerned."""

    code = "bundle_invalid"

    def __init__(self, check: str, reason: str, message: str, *, seq: int | None = None) -> None:
        super().__init__(f"evidence bundle not intact ({check}: {reason}): {message}", seq=seq)
        self.check = check
        self.reason = reason
        self.detail = message
