"""The consent and identity gate: measure a generation request, so the policy can decide on facts.

It counts the faces in the photo, measures how far the face is from the named subject's enrolled references and
from every blocked identity, looks up the subject's consent at `now`, and records the audio length. It never
decides: `policies.evaluate_generation(facts)` does, so a policy change needs no code change and every decision can
be replayed from its facts (they go into the audit log).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlmodel import Session

from policies.facts import GenerationFacts
from safeguards.consent import (
    BlockedIdentity,
    Subject,
    closest_blocked,
    closest_reference_distance,
    consent_status,
)
from safeguards.identity import FaceAnalyzer

__all__ = ["assess_generation_request"]


def _nearest_blocked(
    session: Session, embeddings: list[np.ndarray], embedder: str, threshold: float
) -> tuple[BlockedIdentity, float] | None:
    """The closest blocked identity within `threshold` of ANY face in the photo.

    Every face is checked, not only a single one: a group photo with a protected person in it is still reported
    (the policy denies it for the face count too, but the audit trail should say who was in it).
    """
    best: tuple[BlockedIdentity, float] | None = None
    for embedding in embeddings:
        hit = closest_blocked(session=session, embedding=embedding, embedder=embedder)
        if hit is not None and hit[1] <= threshold and (best is None or hit[1] < best[1]):
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
    subject_threshold: float,
    block_threshold: float,
    now: datetime,
) -> GenerationFacts:
    """Measure everything the generation policy looks at; read-only on the database.

    Args:
        photo_rgb: the request photo, (H, W, 3) uint8 RGB.
        subject_threshold: likeness distance at or under which the photo counts as the subject (policy input).
        block_threshold: distance at or under which a face counts as a blocked identity.
        now: the decision time (consent is judged at this instant).

    Returns:
        GenerationFacts. `subject_distance` is None unless the photo shows exactly one face and the subject has
        references made by the analyzer's embedder; `blocked_identity_id` is set only within `block_threshold`.
    """
    embedder = analyzer.embedder.name
    faces = analyzer.faces(photo_rgb)
    subject_exists = session.get(Subject, subject_id) is not None

    subject_distance: float | None = None
    if len(faces) == 1 and subject_exists:
        subject_distance = closest_reference_distance(
            session=session, subject_id=subject_id, embedding=faces[0].embedding, embedder=embedder
        )
    blocked = _nearest_blocked(session, [f.embedding for f in faces], embedder, block_threshold)

    state, record = consent_status(session=session, subject_id=subject_id, at=now)
    return GenerationFacts(
        client_id=client_id,
        purpose=purpose,
        subject_id=subject_id,
        subject_exists=subject_exists,
        face_count=len(faces),
        subject_distance=subject_distance,
        subject_match_threshold=float(subject_threshold),
        blocked_identity_id=blocked[0].id if blocked else None,
        blocked_distance=blocked[1] if blocked else None,
        block_match_threshold=float(block_threshold),
        consent_record_id=record.id if record else None,
        consent_state=state,
        consent_purposes=tuple(record.purposes) if record else (),
        consent_clients=tuple(record.allowed_clients) if record else (),
        audio_duration_s=float(audio_duration_s),
        max_audio_s=float(max_audio_s),
    )
