"""The consent and identity gate: measure a generation request, so the policy can decide on facts.

It counts the faces in the photo and judges their quality, measures how far the face is from the named subject's
enrolled references and from every blocked identity (nearest reference and mean of references), looks up the
subject's consent at `now`, finds a consent officer's approvals that cover this very photo, and records the audio
length. The thresholds it reports are the ones in force for this photo: a poor photo widens the review bands. It
never decides: `policies.evaluate_generation(facts)` does, so a policy change needs no code change and every
decision can be replayed from its facts (they go into the audit log).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlmodel import Session

from policies.facts import GenerationFacts
from safeguards.blocklist import closest_blocked_score
from safeguards.consent import BlockedIdentity, Subject
from safeguards.consent_records import consent_status
from safeguards.identity import FaceAnalyzer, IdentityThresholds
from safeguards.likeness import IdentityScore, reference_score
from safeguards.reviews import approvals_for

__all__ = ["assess_generation_request"]


def _nearest_blocked(
    session: Session, embeddings: list[np.ndarray], embedder: str, review_threshold: float
) -> tuple[BlockedIdentity, IdentityScore] | None:
    """The closest blocked identity within the block REVIEW threshold of ANY face in the photo.

    Every face is checked, not only a single one: a group photo with a protected person in it is still reported
    (the policy denies it for the face count too, but the audit trail should say who was in it).
    """
    best: tuple[BlockedIdentity, IdentityScore] | None = None
    for embedding in embeddings:
        hit = closest_blocked_score(session=session, embedding=embedding, embedder=embedder)
        if hit is None or hit[1].block_distance > review_threshold:
            continue
        if best is None or hit[1].block_distance < best[1].block_distance:
            best = hit
    return best


def assess_generation_request(
    *,
    session: Session,
    analyzer: FaceAnalyzer,
    photo_rgb: np.ndarray,
    subject_id: str,
    client_id: str,
    purpose: str,
    audio_duration_s: float,
    max_audio_s: float,
    thresholds: IdentityThresholds,
    now: datetime,
    photo_sha256: str | None = None,
) -> GenerationFacts:
    """Measure everything the generation policy looks at; read-only on the database.

    Args:
        photo_rgb: the request photo, (H, W, 3) uint8 RGB.
        thresholds: the subject and block-list bands for a good photo (widened here for a poor one).
        now: the decision time (consent and approvals are judged at this instant).
        photo_sha256: SHA-256 of the photo file's bytes; approvals are looked up by it (None: none can apply).

    Returns:
        GenerationFacts. `subject_distance` is None unless the photo shows exactly one face and the subject has
        references made by the analyzer's embedder; `blocked_identity_id` is set only within the block review band.
    """
    embedder = analyzer.embedder.name
    faces = analyzer.faces(photo_rgb)
    subject_exists = session.get(Subject, subject_id) is not None
    issues = sorted({issue for f in faces if f.quality is not None for issue in f.quality.issues})
    bands = thresholds.for_photo(bool(issues))

    subject_distance: float | None = None
    if len(faces) == 1 and subject_exists:
        score = reference_score(
            session=session, subject_id=subject_id, embedding=faces[0].embedding, embedder=embedder
        )
        subject_distance = None if score is None else score.subject_distance
    blocked = _nearest_blocked(session, [f.embedding for f in faces], embedder, bands.block.review)

    approved: list[str] = []
    review_ids: list[str] = []
    reviewers: list[str] = []
    if photo_sha256 and subject_exists:
        in_subject_band = subject_distance is not None and bands.subject.classify(subject_distance) == "review"
        in_block_band = blocked is not None and bands.block.classify(blocked[1].block_distance) == "review"
        for review in approvals_for(
            session=session,
            photo_sha256=photo_sha256,
            subject_id=subject_id,
            blocked_identity_id=blocked[0].id if blocked else None,
            at=now,
        ):
            relevant = (review.reason == "subject_uncertain" and in_subject_band) or (
                review.reason == "possible_protected_identity" and in_block_band
            )
            if relevant and review.reason not in approved:
                approved.append(review.reason)
                review_ids.append(review.id)
                reviewers.append(review.decided_by or "")

    state, record = consent_status(session=session, subject_id=subject_id, at=now)
    return GenerationFacts(
        client_id=client_id,
        purpose=purpose,
        subject_id=subject_id,
        subject_exists=subject_exists,
        face_count=len(faces),
        subject_distance=subject_distance,
        subject_match_threshold=float(bands.subject.match),
        blocked_identity_id=blocked[0].id if blocked else None,
        blocked_distance=blocked[1].block_distance if blocked else None,
        block_match_threshold=float(bands.block.match),
        consent_record_id=record.id if record else None,
        consent_state=state,
        consent_purposes=tuple(record.purposes) if record else (),
        consent_clients=tuple(record.allowed_clients) if record else (),
        audio_duration_s=float(audio_duration_s),
        max_audio_s=float(max_audio_s),
        subject_review_threshold=float(bands.subject.review),
        block_review_threshold=float(bands.block.review),
        approved_reviews=tuple(approved),
        review_ids=tuple(review_ids),
        reviewed_by=tuple(reviewers),
        face_quality_issues=tuple(issues),
        photo_sha256=photo_sha256,
        smallest_face_px=analyzer.smallest_counted_face_px(*photo_rgb.shape[:2]),
    )
