"""Evidence for one entry: the signed checkpoint that covers it and its RFC 6962 inclusion proof in that tree.

With these three things (the entry's hash, the checkpoint, the proof) anyone holding the audit public key can check
that the entry is in the log the service signed, without the other entries: `root_from_inclusion_proof(leaf,
seq - 1, size, proof)` must give the checkpoint's signed root. The covering checkpoint is the earliest one that
includes the entry (the first witnessed checkpoint of size >= seq), falling back to the database's current one.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.errors import CheckpointMismatch, MissingEntry
from audit.log import AuditLog, verify_checkpoint_signature
from audit.merkle import root_from_inclusion_proof
from audit.models import AuditCheckpoint
from audit.proofs import LeafTree


@dataclass(frozen=True)
class EntryEvidence:
    seq: int
    entry_hash: str
    checkpoint: AuditCheckpoint
    inclusion_proof: list[str]  # hex, leaf side first


def entry_evidence(log: AuditLog, seq: int) -> EntryEvidence:
    """The covering checkpoint and inclusion proof of entry `seq`, checked before they are returned.

    Reads the entry hashes 1..size of the covering checkpoint (O(size)). Raises MissingEntry when there is no such
    entry, CheckpointMismatch when the stored entries do not give the checkpoint's signed root.
    """
    current = log.checkpoint()
    if current is None or not 1 <= seq <= current.size:
        raise MissingEntry(seq)
    covering = current
    if log.witness is not None:
        witnessed = [
            w.checkpoint for w in log.witness.checkpoints(log.origin) if seq <= w.checkpoint.size <= current.size
        ]
        if witnessed:
            covering = min(witnessed, key=lambda c: (c.size, c.signed_at))
    verify_checkpoint_signature(covering, log.public_key)
    leaves: list[bytes] = []
    for event in log.iter_events():
        if event.seq > covering.size:
            break
        leaves.append(bytes.fromhex(event.entry_hash))
    if len(leaves) != covering.size:
        raise CheckpointMismatch(
            f"the checkpoint covers {covering.size} entries but {len(leaves)} are stored", seq=len(leaves) + 1
        )
    proof = LeafTree(leaves).inclusion_proof(seq - 1, covering.size)
    if root_from_inclusion_proof(leaves[seq - 1], seq - 1, covering.size, proof).hex() != covering.root_hash:
        raise CheckpointMismatch(
            f"entries 1..{covering.size} do not give the root the checkpoint signed", seq=covering.size
        )
    return EntryEvidence(seq, leaves[seq - 1].hex(), covering, [h.hex() for h in proof])
