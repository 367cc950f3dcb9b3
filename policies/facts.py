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
    # Distance between the photo's face and the subject's enrolled references (the larger of nearest-reference and
    # distance-to-mean, see safeguards.likeness.IdentityScore); None without exactly one face.
    subject_distance: float | None
    # At or under: the subject. Over `subject_review_threshold`: someone else. In between: `subject_uncertain`.
    subject_match_threshold: float
    # The closest blocked identity within the block REVIEW threshold, if any (the smaller of nearest-reference and
    # distance-to-mean).
    blocked_identity_id: str | None
    blocked_distance: float | None
    # At or under: `blocked_identity` (never approvable). Up to `block_review_threshold`: `possible_protected_identity`.
    block_match_threshold: float
    consent_record_id: str | None
    consent_state: ConsentState
    consent_purposes: tuple[str, ...] = field(default_factory=tuple)
    consent_clients: tuple[str, ...] = field(default_factory=tuple)
    audio_duration_s: float = 0.0
    max_audio_s: float = 120.0
    # The loose ends of the review bands (None: no band, the match threshold alone decides). The gate widens them
    # for poor photos, so these are the thresholds in force for THIS photo.
    subject_review_threshold: float | None = None
    block_review_threshold: float | None = None
    # Review codes a consent officer approved for this photo (bound to its SHA-256, the subject and, for the block
    # list, the blocked identity; checked by the gate), the approvals' ids and who approved them.
    approved_reviews: tuple[str, ...] = field(default_factory=tuple)
    review_ids: tuple[str, ...] = field(default_factory=tuple)
    reviewed_by: tuple[str, ...] = field(default_factory=tuple)
    # Why the photo counts as poor (e.g. "small_face", "blurry", "turned", "occluded"); widens the bands.
    face_quality_issues: tuple[str, ...] = field(default_factory=tuple)
    photo_sha256: str | None = None
    # The narrowest face (photo pixels) the count includes (it depends on the photo's size; stated in refusals).
    smallest_face_px: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for the audit entry)."""
        d = asdict(self)
        d["consent_purposes"] = list(self.consent_purposes)
        d["consent_clients"] = list(self.consent_clients)
        for name in ("approved_reviews", "review_ids", "reviewed_by", "face_quality_issues"):
            d[name] = list(getattr(self, name))
        return d
