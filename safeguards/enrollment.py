"""Enrolling a subject from reference photos (and adding one later), refused near a blocked identity.

Every photo must show exactly one face, be clear of the block list (a photo in its review band passes only with a
consent officer's justification) and, with a reference threshold, agree with the subject's other photos. The photo
files are kept only when the subject allows it and a photo directory is configured. Data functions flush and never
commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlmodel import Session

from safeguards.blocklist import closest_blocked
from safeguards.consent import Subject, SubjectCreate, SubjectReference
from safeguards.db_types import utc_now
from safeguards.errors import (
    BlockedIdentityMatch,
    MissingReferencePhoto,
    PhotoStorageNotConfigured,
    PossibleBlockedIdentityMatch,
    ReferenceMismatch,
)
from safeguards.identity import FaceAnalyzer, face_distance
from safeguards.reference_photos import ReferencePhoto, single_face_embedding
from safeguards.subjects import get_subject, list_references

__all__ = ["BandHit", "add_reference", "enroll_subject"]


@dataclass(frozen=True)
class BandHit:
    """A reference photo that fell into the block list's review band and was let through by a consent officer."""

    photo_sha256: str
    blocked_id: str
    distance: float



def _refuse_blocked(
    session: Session,
    embedding: np.ndarray,
    embedder: str,
    block_threshold: float,
    block_review_threshold: float | None,
    justification: str | None,
    photo_sha256: str,
) -> BandHit | None:
    """Refuse a photo inside the block list's band; a band hit passes only with an officer's justification."""
    hit = closest_blocked(session=session, embedding=embedding, embedder=embedder)
    if hit is None:
        return None
    if hit[1] <= block_threshold:
        raise BlockedIdentityMatch(hit[0].id, hit[1])
    if block_review_threshold is not None and hit[1] <= block_review_threshold:
        if not justification:
            raise PossibleBlockedIdentityMatch(hit[0].id, hit[1])
        return BandHit(photo_sha256=photo_sha256, blocked_id=hit[0].id, distance=hit[1])
    return None


def _store_photo(photo: ReferencePhoto, subject: Subject, photo_dir: Path | None) -> str | None:
    """Write the photo under photo_dir/<subject>/<sha256><suffix> when the subject allows it; return the path."""
    if not subject.store_photos:
        return None
    if photo_dir is None:
        raise PhotoStorageNotConfigured(
            f"subject {subject.id} allows storing reference photos, but no photo directory is configured"
        )
    Path(photo_dir).mkdir(parents=True, exist_ok=True, mode=0o700)  # parents=True alone would make it 0755
    target_dir = Path(photo_dir) / subject.id
    target_dir.mkdir(exist_ok=True, mode=0o700)
    target = target_dir / f"{photo.sha256}{photo.suffix}"
    if not target.exists():
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_bytes(photo.content)
        tmp.chmod(0o600)
        tmp.replace(target)
    return str(target)


def _check_consistent(
    subject_id: str, embedding: np.ndarray, others: Sequence[np.ndarray], threshold: float | None
) -> None:
    if threshold is None or not others:
        return
    distance = min(face_distance(embedding, other) for other in others)
    if distance > threshold:
        raise ReferenceMismatch(subject_id, distance, threshold)


def enroll_subject(
    *,
    session: Session,
    subject_in: SubjectCreate,
    photos: Sequence[ReferencePhoto],
    analyzer: FaceAnalyzer,
    created_by: str,
    block_threshold: float,
    reference_threshold: float | None = None,
    photo_dir: Path | None = None,
    now: datetime | None = None,
    block_review_threshold: float | None = None,
    review_justification: str | None = None,
    band_hits: list[BandHit] | None = None,
) -> Subject:
    """Create a subject from one or more reference photos (each must show exactly one face).

    Every photo is checked before anything is written: a photo that matches a blocked identity (distance <=
    `block_threshold`) refuses the whole enrollment, whatever anyone says. A photo inside the review band (up to
    `block_review_threshold`) refuses it too, unless the enrolling consent officer gives `review_justification`;
    such photos are appended to `band_hits` for the audit entry. With `reference_threshold`, each photo must also
    be within that distance of an earlier one (catches a second person slipped in). Flushes, does not commit.

    Raises:
        MissingReferencePhoto, NoFaceInPhoto, MultipleFacesInPhoto, BlockedIdentityMatch,
        PossibleBlockedIdentityMatch, ReferenceMismatch, PhotoStorageNotConfigured.
    """
    if not photos:
        raise MissingReferencePhoto("enrolling a subject needs at least one reference photo of their face")
    embedder = analyzer.embedder.name
    subject = Subject.model_validate(subject_in, update={"created_at": utc_now(now), "created_by": created_by})
    embeddings: list[np.ndarray] = []
    hits: list[BandHit] = []
    for photo in photos:
        embedding = single_face_embedding(analyzer, photo)
        hit = _refuse_blocked(
            session, embedding, embedder, block_threshold, block_review_threshold, review_justification, photo.sha256
        )
        if hit is not None:
            hits.append(hit)
        _check_consistent(subject.id, embedding, embeddings, reference_threshold)
        embeddings.append(embedding)
    if band_hits is not None:
        band_hits.extend(hits)
    if subject.store_photos and photo_dir is None:
        raise PhotoStorageNotConfigured(
            "the subject allows storing reference photos, but no photo directory is configured"
        )
    session.add(subject)
    session.flush()
    for photo, embedding in zip(photos, embeddings, strict=True):
        session.add(
            SubjectReference(
                subject_id=subject.id,
                embedding=[float(v) for v in embedding],
                embedder=embedder,
                photo_sha256=photo.sha256,
                photo_path=_store_photo(photo, subject, photo_dir),
                created_at=subject.created_at,
            )
        )
    session.flush()
    return subject


def add_reference(
    *,
    session: Session,
    subject_id: str,
    photo: ReferencePhoto,
    analyzer: FaceAnalyzer,
    block_threshold: float,
    reference_threshold: float | None = None,
    photo_dir: Path | None = None,
    now: datetime | None = None,
    block_review_threshold: float | None = None,
    review_justification: str | None = None,
) -> SubjectReference:
    """Add one reference photo to an existing subject (same checks as `enroll_subject`). Flushes, no commit."""
    subject = get_subject(session=session, subject_id=subject_id)
    embedder = analyzer.embedder.name
    embedding = single_face_embedding(analyzer, photo)
    _refuse_blocked(
        session, embedding, embedder, block_threshold, block_review_threshold, review_justification, photo.sha256
    )
    existing = [
        np.asarray(r.embedding)
        for r in list_references(session=session, subject_id=subject_id)
        if r.embedder == embedder
    ]
    _check_consistent(subject_id, embedding, existing, reference_threshold)
    reference = SubjectReference(
        subject_id=subject_id,
        embedding=[float(v) for v in embedding],
        embedder=embedder,
        photo_sha256=photo.sha256,
        photo_path=_store_photo(photo, subject, photo_dir),
        created_at=utc_now(now),
    )
    session.add(reference)
    session.flush()
    return reference
