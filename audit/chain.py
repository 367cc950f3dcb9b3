"""Streaming chain verification, shared by `AuditLog.verify()` and offline checks of a JSONL export.

Feed entries in order; the verifier keeps O(log n) state (the previous hash and the Merkle frontier) and
raises the typed error that names the first bad entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from audit.canonical import canonical_json
from audit.errors import AuditError, ChainBroken, CheckpointMismatch, MissingEntry
from audit.merkle import frontier_append, frontier_root, leaf_hash
from audit.models import HASHED_FIELDS, AuditCheckpoint

GENESIS_HASH = "0" * 64


def compute_entry_hash(fields: Mapping[str, Any]) -> str:
    """Hex RFC 6962 leaf hash (SHA-256 of 0x00 || canonical JSON) of an entry's hashed fields."""
    return leaf_hash(canonical_json(dict(fields))).hex()


class ChainVerifier:
    """Checks that entries link up from `start_seq` (default: genesis) and tracks the Merkle tree head."""

    def __init__(self, *, start_seq: int = 1, prev_hash: str = GENESIS_HASH) -> None:
        self.from_genesis = start_seq == 1 and prev_hash == GENESIS_HASH
        self.next_seq = start_seq
        self.head_hash = prev_hash
        self.count = 0
        self._frontier: list[bytes] = []

    def feed(self, record: Mapping[str, Any]) -> None:
        """Check one entry (a mapping with the hashed fields and `entry_hash`); raise on the first
        mismatch."""
        seq = record.get("seq")
        if seq != self.next_seq:
            raise MissingEntry(self.next_seq, found_seq=seq if isinstance(seq, int) else None)
        if record.get("prev_hash") != self.head_hash:
            raise ChainBroken(seq, self.head_hash, str(record.get("prev_hash")), field="prev_hash")
        try:
            recomputed = compute_entry_hash({name: record[name] for name in HASHED_FIELDS})
        except (KeyError, AuditError) as exc:
            raise ChainBroken(seq, "a well-formed entry", f"unreadable fields ({exc})") from exc
        if recomputed != record.get("entry_hash"):
            raise ChainBroken(seq, recomputed, str(record.get("entry_hash")))
        if self.from_genesis:
            self._frontier = frontier_append(self._frontier, seq - 1, bytes.fromhex(recomputed))
        self.head_hash = recomputed
        self.next_seq += 1
        self.count += 1

    def feed_all(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Feed every record in order."""
        for record in records:
            self.feed(record)

    @property
    def size(self) -> int:
        """Sequence number of the last entry accepted (0 before the first)."""
        return self.next_seq - 1

    @property
    def frontier(self) -> list[str]:
        """Hex Merkle subtree roots of the entries so far (only meaningful from genesis)."""
        return [h.hex() for h in self._frontier]

    @property
    def root_hash(self) -> str:
        """Hex RFC 6962 tree head over every entry hash fed (from genesis only)."""
        if not self.from_genesis:
            raise ValueError("a Merkle root needs the chain from seq 1")
        return frontier_root(self._frontier).hex()

    def check_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Raise CheckpointMismatch unless the entries fed (from genesis) are exactly what `checkpoint`
        signed.

        The signature itself is checked separately (`verify_checkpoint_signature`), with the right public key.
        """
        if self.size != checkpoint.size:
            if self.size < checkpoint.size:
                reason = (
                    f"the signed checkpoint covers {checkpoint.size} entries but only {self.size} are "
                    "present; the newest entries were deleted"
                )
            else:
                reason = (
                    f"{self.size} entries are present but the signed checkpoint covers only {checkpoint.size}"
                )
            raise CheckpointMismatch(
                reason,
                seq=min(self.size, checkpoint.size) + 1,
                expected=str(checkpoint.size),
                found=str(self.size),
            )
        if self.head_hash != checkpoint.head_hash:
            raise CheckpointMismatch(
                "head hash differs from the signed checkpoint",
                seq=self.size,
                expected=checkpoint.head_hash,
                found=self.head_hash,
            )
        if self.root_hash != checkpoint.root_hash:
            raise CheckpointMismatch(
                "Merkle root differs from the signed checkpoint",
                seq=self.size,
                expected=checkpoint.root_hash,
                found=self.root_hash,
            )
        if list(checkpoint.frontier) != self.frontier:
            raise CheckpointMismatch("stored Merkle frontier differs from the recomputed one", seq=self.size)
