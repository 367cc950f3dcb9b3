"""The measured facts a generation request is judged on.

The safeguards measure (faces, likeness distances, consent state, audio length); the policy decides. Keeping the
two apart means a policy change never needs a code change, and every decision can be replayed from its facts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ConsentState = Literal["none", "active", "expired", "revoked"]


@dataclass(frozen=True)
class GenerationFacts:
    """Everything the generation policy may look at. Distances are face-embedding distances (lower = more alike)."""

    client_id: str
    purpose: str
    subject_id: str
    subject_exists: bool
    face_count: int
    # Smallest distance between the photo's face and the subject's enrolled references; None without exactly one face.
    subject_distance: float | None
    subject_match_threshold: float
    # The closest blocked identity under the block threshold, if any.
    blocked_identity_id: str | None
    blocked_distance: float | None
    block_match_threshold: float
    consent_record_id: str | None
    consent_state: ConsentState
    consent_purposes: tuple[str, ...] = field(default_factory=tuple)
    consent_clients: tuple[str, ...] = field(default_factory=tuple)
    audio_duration_s: float = 0.0
    max_audio_s: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the audit entry)."""
        d = asdict(self)
        d["consent_purposes"] = list(self.consent_purposes)
        d["consent_clients"] = list(self.consent_clients)
        return d
