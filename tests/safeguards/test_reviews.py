"""Issue 15: multi-photo references (nearest and mean), the review queue, and approvals bound to one photo.

Runs on SQLite and on the real PostgreSQL server (marked `postgres`). Photos are the shipped example and variants
of it synthesised here; a borderline block-list entry is constructed at an exact distance from the example's face.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from sqlmodel import Session

from policies import evaluate_generation
from safeguards.blocklist import add_block_references, block_identity, blocked_references, closest_blocked_score
from safeguards.consent import BlockedIdentity, BlockedIdentityCreate, ConsentCreate, SubjectCreate
from safeguards.consent_records import grant_consent
from safeguards.enrollment import enroll_subject
from safeguards.errors import (
    BlockedIdentityMatch,
    InvalidReviewDecision,
    PossibleBlockedIdentityMatch,
    ReviewNotFound,
    ReviewNotPending,
)
from safeguards.gate import assess_generation_request
from safeguards.identity import (
    DEFAULT_BLOCK_MATCH_THRESHOLD,
    DEFAULT_BLOCK_REVIEW_THRESHOLD,
    FaceAnalyzer,
    IdentityThresholds,
)
from safeguards.likeness import reference_score, score_references
from safeguards.reference_photos import ReferencePhoto
from safeguards.reviews import (
    IdentityReviewPublic,
    ReviewStatus,
    approvals_for,
    decide_review,
    list_reviews,
    queue_review,
    record_use,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _photo(image: np.ndarray) -> ReferencePhoto:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return ReferencePhoto(image_rgb=image, content=buf.getvalue())


@pytest.fixture(scope="module")
def astronaut(example_photo: Path) -> ReferencePhoto:
    data = example_photo.read_bytes()
    return ReferencePhoto(image_rgb=np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), content=data)


@pytest.fixture(scope="module")
def variants(astronaut: ReferencePhoto) -> list[ReferencePhoto]:
    """Two more photos of the same person: mirrored and brighter, and slightly rotated."""
    pil = Image.fromarray(astronaut.image_rgb)
    bright = np.asarray(ImageEnhance.Brightness(pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).enhance(1.2))
    rotated = np.asarray(pil.rotate(6, resample=Image.Resampling.BILINEAR))
    return [_photo(np.ascontiguousarray(bright)), _photo(np.ascontiguousarray(rotated))]


@pytest.fixture(scope="module")
def embedding(analyzer: FaceAnalyzer, astronaut: ReferencePhoto) -> np.ndarray:
    return analyzer.faces(astronaut.image_rgb)[0].embedding


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session(request: pytest.FixtureRequest) -> Any:
    engine = request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")
    with Session(engine) as s:
        yield s


def _near(embedding: np.ndarray, distance: float) -> list[float]:
    direction = np.random.default_rng(3).normal(size=embedding.shape)
    return [float(v) for v in embedding + distance * direction / np.linalg.norm(direction)]


def _borderline_block(session: Session, analyzer: FaceAnalyzer, embedding: np.ndarray, distance: float) -> str:
    row = BlockedIdentity(
        label="look-alike public figure",
        reason="test",
        embedding=_near(embedding, distance),
        embedder=analyzer.embedder.name,
        photo_sha256="a" * 64,
        created_at=T0,
        created_by="admin:test",
    )
    session.add(row)
    session.flush()
    return row.id


def _subject(session: Session, analyzer: FaceAnalyzer, photos: list[ReferencePhoto], **kw: Any) -> str:
    subject = enroll_subject(
        session=session,
        subject_in=SubjectCreate(display_name="Eileen Collins"),
        photos=photos,
        analyzer=analyzer,
        created_by="admin:test",
        block_threshold=DEFAULT_BLOCK_MATCH_THRESHOLD,
        now=T0,
        **kw,
    )
    grant_consent(
        session=session,
        consent_in=ConsentCreate(
            subject_id=subject.id,
            purposes=["education"],
            allowed_clients=["client_a"],
            expires_at=T0 + timedelta(days=60),
            evidence_sha256=hashlib.sha256(b"form").hexdigest(),
        ),
        granted_by="admin:test",
        now=T0,
    )
    session.commit()
    return subject.id


# --- scores and multi-photo references -----------------------------------------------------------------------


def test_score_is_nearest_and_distance_to_the_mean() -> None:
    refs = np.array([[0.0, 0.0], [2.0, 0.0]])
    score = score_references(refs, np.array([0.0, 0.5]))
    assert score.nearest == pytest.approx(0.5) and score.to_mean == pytest.approx(np.hypot(1.0, 0.5))
    assert score.references == 2
    # The block list stops on the closer view, the subject check needs both views close.
    assert score.block_distance == pytest.approx(0.5) and score.subject_distance == pytest.approx(np.hypot(1, 0.5))


def test_multi_photo_enrollment_scores_against_every_reference(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, variants: list[ReferencePhoto]
) -> None:
    subject_id = _subject(session, analyzer, [astronaut, *variants], reference_threshold=0.56)
    faces = analyzer.faces(astronaut.image_rgb)
    score = reference_score(
        session=session, subject_id=subject_id, embedding=faces[0].embedding, embedder=analyzer.embedder.name
    )
    assert score is not None and score.references == 3
    assert score.nearest < 1e-4 < score.to_mean < 0.2  # itself is a reference; the mean is near


def test_multi_photo_block_list_entry_and_adding_photos(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, variants: list[ReferencePhoto]
) -> None:
    entry = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label="Eileen Collins", reason="public figure"),
        photos=[astronaut, variants[0]],
        analyzer=analyzer,
        created_by="admin:test",
    )
    refs = blocked_references(session=session, blocked_ids=[entry.id])
    assert [r.photo_sha256 for r in refs] == [astronaut.sha256, variants[0].sha256]
    add_block_references(session=session, blocked_id=entry.id, photos=[variants[1]], analyzer=analyzer)
    assert len(blocked_references(session=session, blocked_ids=[entry.id])) == 3
    hit = closest_blocked_score(
        session=session, embedding=analyzer.faces(variants[1].image_rgb)[0].embedding, embedder=analyzer.embedder.name
    )
    assert hit is not None and hit[0].id == entry.id and hit[1].references == 3
    assert hit[1].block_distance < DEFAULT_BLOCK_MATCH_THRESHOLD


def test_a_row_from_before_multi_photo_blocking_still_matches_and_can_grow(
    session: Session, analyzer: FaceAnalyzer, embedding: np.ndarray, variants: list[ReferencePhoto]
) -> None:
    legacy_id = _borderline_block(session, analyzer, embedding, 0.3)  # a row with no reference rows
    hit = closest_blocked_score(session=session, embedding=embedding, embedder=analyzer.embedder.name)
    assert hit is not None and hit[0].id == legacy_id and hit[1].references == 1
    assert hit[1].block_distance == pytest.approx(0.3, abs=1e-5)
    add_block_references(session=session, blocked_id=legacy_id, photos=[variants[0]], analyzer=analyzer)
    assert len(blocked_references(session=session, blocked_ids=[legacy_id])) == 2  # its own + the new one


def test_enrollment_in_the_block_band_needs_a_justification(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, embedding: np.ndarray
) -> None:
    blocked_id = _borderline_block(session, analyzer, embedding, 0.55)
    kw: dict[str, Any] = {"block_review_threshold": DEFAULT_BLOCK_REVIEW_THRESHOLD}
    with pytest.raises(PossibleBlockedIdentityMatch) as info:
        _subject(session, analyzer, [astronaut], **kw)
    assert info.value.code == "possible_protected_identity" and info.value.blocked_id == blocked_id
    session.rollback()
    blocked_id = _borderline_block(session, analyzer, embedding, 0.55)
    hits: list[Any] = []
    why = "compared with press photos: not her"
    _subject(session, analyzer, [astronaut], review_justification=why, band_hits=hits, **kw)
    assert [(h.blocked_id, round(h.distance, 3)) for h in hits] == [(blocked_id, 0.55)]
    # A certain match is refused whatever the justification.
    _borderline_block(session, analyzer, embedding, 0.2)
    with pytest.raises(BlockedIdentityMatch):
        _subject(session, analyzer, [astronaut], review_justification="I am sure it is fine, really", **kw)


# --- the review queue and its approvals ----------------------------------------------------------------------


def _queue(session: Session, subject_id: str, blocked_id: str | None, photo_sha: str, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "reason": "possible_protected_identity" if blocked_id else "subject_uncertain",
        "photo_sha256": photo_sha,
        "subject_id": subject_id,
        "blocked_identity_id": blocked_id,
        "distance": 0.55,
        "match_threshold": 0.45,
        "review_threshold": 0.62,
        "quality_issues": [],
        "client_id": "client_a",
        "requested_by": "client:client_a",
        "now": T0,
    }
    args.update(kw)
    return queue_review(session=session, **args)


def test_queue_deduplicates_and_decisions_are_validated_and_final(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, embedding: np.ndarray
) -> None:
    subject_id = _subject(session, analyzer, [astronaut])
    blocked_id = _borderline_block(session, analyzer, embedding, 0.55)
    review, created = _queue(session, subject_id, blocked_id, astronaut.sha256)
    again, created_again = _queue(session, subject_id, blocked_id, astronaut.sha256)
    assert created and not created_again and again.id == review.id
    assert [r.id for r in list_reviews(session=session, status=ReviewStatus.pending)] == [review.id]
    assert "embedding" not in IdentityReviewPublic.model_fields

    with pytest.raises(InvalidReviewDecision, match="justification"):
        decide_review(session=session, review_id=review.id, approve=True, decided_by="cli:officer", justification="ok")
    with pytest.raises(InvalidReviewDecision, match="cannot decide its own"):
        decide_review(
            session=session,
            review_id=review.id,
            approve=True,
            decided_by="client:client_a",
            justification="it is me, I promise you",
        )
    with pytest.raises(ReviewNotFound):
        decide_review(session=session, review_id="rev_nope", approve=True, decided_by="x", justification="x" * 20)
    decided = decide_review(
        session=session,
        review_id=review.id,
        approve=True,
        decided_by="cli:officer",
        justification="side by side with the public figure's photos: different jaw and ears",
        now=T0,
    )
    assert decided.status == "approved" and decided.decided_by == "cli:officer"
    assert decided.expires_at == T0 + timedelta(days=30)
    with pytest.raises(ReviewNotPending):
        decide_review(
            session=session, review_id=review.id, approve=False, decided_by="cli:other", justification="x" * 20
        )


def test_an_approval_is_bound_to_the_photo_the_subject_and_the_blocked_identity(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, embedding: np.ndarray
) -> None:
    subject_id = _subject(session, analyzer, [astronaut])
    blocked_id = _borderline_block(session, analyzer, embedding, 0.55)
    review, _ = _queue(session, subject_id, blocked_id, astronaut.sha256)
    decide_review(
        session=session, review_id=review.id, approve=True, decided_by="cli:officer", justification="x" * 12, now=T0
    )
    at = T0 + timedelta(days=1)

    def found(**kw: Any) -> list[str]:
        args: dict[str, Any] = {
            "photo_sha256": astronaut.sha256,
            "subject_id": subject_id,
            "blocked_identity_id": blocked_id,
            "at": at,
        }
        args.update(kw)
        return [r.id for r in approvals_for(session=session, **args)]

    assert found() == [review.id]
    assert found(photo_sha256="b" * 64) == []  # another photo
    assert found(blocked_identity_id="blk_other") == []  # a different protected person came closer
    assert found(at=T0 + timedelta(days=31)) == []  # expired
    other = _subject(session, analyzer, [astronaut])
    assert found(subject_id=other) == []
    record_use(session=session, review_ids=[review.id], now=at)
    assert review.uses == 1 and review.last_used_at == at


def test_gate_and_policy_allow_only_the_approved_photo(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, embedding: np.ndarray
) -> None:
    """The whole flow on the safeguards side: denied in the band, queued, approved, allowed for that photo only."""
    subject_id = _subject(session, analyzer, [astronaut])
    blocked_id = _borderline_block(session, analyzer, embedding, 0.55)
    session.commit()

    def assess(photo: ReferencePhoto) -> Any:
        return assess_generation_request(
            session=session,
            analyzer=analyzer,
            photo_rgb=photo.image_rgb,
            subject_id=subject_id,
            client_id="client_a",
            purpose="education",
            audio_duration_s=5.0,
            max_audio_s=120.0,
            thresholds=IdentityThresholds(),
            now=T0 + timedelta(days=1),
            photo_sha256=photo.sha256,
        )

    facts = assess(astronaut)
    assert evaluate_generation(facts).reasons == ["possible_protected_identity"]
    review, _ = _queue(
        session, subject_id, facts.blocked_identity_id, astronaut.sha256, distance=facts.blocked_distance
    )
    assert review.blocked_identity_id == blocked_id
    decide_review(
        session=session,
        review_id=review.id,
        approve=True,
        decided_by="cli:officer",
        justification="checked against the blocked person's reference photos: not them",
        now=T0,
    )
    session.commit()
    approved = assess(astronaut)
    assert approved.approved_reviews == ("possible_protected_identity",)
    assert approved.review_ids == (review.id,) and approved.reviewed_by == ("cli:officer",)
    assert evaluate_generation(approved).allowed
    # The same face in a different file (re-encoded as JPEG) is a different photo: still denied.
    buf = io.BytesIO()
    Image.fromarray(astronaut.image_rgb).save(buf, format="JPEG", quality=95)
    other_file = ReferencePhoto(image_rgb=np.asarray(Image.open(buf).convert("RGB")), content=buf.getvalue())
    refused = assess(other_file)
    assert refused.approved_reviews == ()
    assert evaluate_generation(refused).reasons == ["possible_protected_identity"]
