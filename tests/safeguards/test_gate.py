"""The gate measures each denial scenario into the right GenerationFacts (and the policy reads them as intended)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlmodel import Session

from policies import GenerationFacts, evaluate_generation
from safeguards.blocklist import block_identity
from safeguards.consent import BlockedIdentityCreate, ConsentCreate
from safeguards.consent_records import grant_consent, revoke_consent
from safeguards.identity import (
    DEFAULT_BLOCK_MATCH_THRESHOLD,
    DEFAULT_BLOCK_REVIEW_THRESHOLD,
    DEFAULT_SUBJECT_MATCH_THRESHOLD,
    DEFAULT_SUBJECT_REVIEW_THRESHOLD,
    FaceAnalyzer,
    IdentityThresholds,
)
from safeguards.reference_photos import ReferencePhoto
from tests.safeguards.consenting import T0, assess, enroll_consenting_subject, reference_photo, rgb


@pytest.fixture(scope="module")
def astronaut(example_photo: Path) -> np.ndarray:
    return rgb(example_photo)


@pytest.fixture()
def session(sqlite_engine: Any) -> Any:
    with Session(sqlite_engine) as s:
        yield s


@pytest.fixture()
def subject_id(session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray) -> str:
    """Eileen Collins enrolled from the example photo, consenting to "education" for client_a for 30 days."""
    return enroll_consenting_subject(session, analyzer, astronaut)


def _reasons(facts: GenerationFacts) -> list[str]:
    return evaluate_generation(facts).reasons


def test_consenting_subject_with_their_photo_is_allowed(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    facts = assess(session, analyzer, astronaut, subject_id)
    assert isinstance(facts, GenerationFacts)
    assert facts.subject_exists and facts.face_count == 1
    assert facts.subject_distance is not None and facts.subject_distance < 0.01
    assert facts.consent_state == "active" and facts.consent_record_id is not None
    assert facts.consent_purposes == ("education",) and facts.consent_clients == ("client_a",)
    assert facts.blocked_identity_id is None and facts.blocked_distance is None
    assert (facts.subject_match_threshold, facts.block_match_threshold) == (
        DEFAULT_SUBJECT_MATCH_THRESHOLD,
        DEFAULT_BLOCK_MATCH_THRESHOLD,
    )
    assert (facts.subject_review_threshold, facts.block_review_threshold) == (
        DEFAULT_SUBJECT_REVIEW_THRESHOLD,
        DEFAULT_BLOCK_REVIEW_THRESHOLD,
    )
    assert facts.face_quality_issues == () and facts.approved_reviews == ()
    assert (facts.audio_duration_s, facts.max_audio_s) == (9.7, 120.0)
    assert _reasons(facts) == []
    # A brighter, mirrored copy of the same person still matches.
    variant = np.clip(astronaut[:, ::-1].astype(np.int16) + 25, 0, 255).astype(np.uint8)
    facts = assess(session, analyzer, variant, subject_id)
    assert facts.subject_distance is not None and facts.subject_distance < DEFAULT_SUBJECT_MATCH_THRESHOLD
    assert _reasons(facts) == []


def test_no_face_and_multiple_faces(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    none = assess(session, analyzer, np.full((256, 256, 3), 200, np.uint8), subject_id)
    assert none.face_count == 0 and none.subject_distance is None
    assert _reasons(none)[0] == "no_face"
    two = assess(session, analyzer, np.hstack([astronaut, astronaut]), subject_id)
    assert two.face_count == 2 and two.subject_distance is None
    assert _reasons(two)[0] == "multiple_faces"


def test_unknown_subject_and_missing_consent(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    unknown = assess(session, analyzer, astronaut, "subj_nobody")
    assert not unknown.subject_exists and unknown.subject_distance is None
    assert unknown.consent_state == "none" and unknown.consent_record_id is None
    assert "unknown_subject" in _reasons(unknown)

    before = assess(session, analyzer, astronaut, subject_id, now=T0 - timedelta(days=1))
    assert before.consent_state == "none"
    assert _reasons(before) == ["no_consent"]


def test_expired_and_revoked_consent(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    expired = assess(session, analyzer, astronaut, subject_id, now=T0 + timedelta(days=31))
    assert expired.consent_state == "expired" and expired.consent_record_id is not None
    assert _reasons(expired) == ["consent_expired"]

    revoke_consent(
        session=session, subject_id=subject_id, revoked_by="subject", reason="no", now=T0 + timedelta(hours=2)
    )
    session.commit()
    # The very next request sees it.
    revoked = assess(session, analyzer, astronaut, subject_id, now=T0 + timedelta(hours=2, seconds=1))
    assert revoked.consent_state == "revoked"
    assert _reasons(revoked) == ["consent_revoked"]


def test_wrong_purpose_wrong_client_and_long_audio(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    purpose = assess(session, analyzer, astronaut, subject_id, purpose="marketing")
    assert purpose.purpose == "marketing" and purpose.consent_state == "active"
    assert _reasons(purpose) == ["consent_wrong_purpose"]
    client = assess(session, analyzer, astronaut, subject_id, client_id="client_b")
    assert client.client_id == "client_b"
    assert _reasons(client) == ["consent_wrong_client"]
    long_audio = assess(session, analyzer, astronaut, subject_id, audio_duration_s=3600.0)
    assert long_audio.audio_duration_s == 3600.0
    assert _reasons(long_audio) == ["audio_too_long"]


def test_blocked_identity_is_reported_even_for_an_enrolled_subject(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    blocked = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label="Eileen Collins", reason="public figure"),
        photo=reference_photo(np.ascontiguousarray(astronaut[:, ::-1])),
        analyzer=analyzer,
        created_by="admin:test",
    )
    session.commit()
    facts = assess(session, analyzer, astronaut, subject_id)
    assert facts.blocked_identity_id == blocked.id
    assert facts.blocked_distance is not None and facts.blocked_distance <= DEFAULT_BLOCK_MATCH_THRESHOLD
    assert _reasons(facts) == ["blocked_identity"]
    # Also inside a group photo (denied for two faces, and the blocked person is named).
    group = assess(session, analyzer, np.hstack([astronaut, astronaut]), subject_id)
    assert group.blocked_identity_id == blocked.id
    assert _reasons(group)[:2] == ["multiple_faces", "blocked_identity"]


@pytest.mark.shared_media
def test_someone_else_in_the_photo_is_a_subject_mismatch(
    session: Session, analyzer: FaceAnalyzer, subject_id: str, shared_media: Path
) -> None:
    other = rgb(shared_media / "portraits" / "woman_smiling_happy.png")
    facts = assess(session, analyzer, other, subject_id)
    assert facts.face_count == 1
    assert facts.subject_distance is not None and facts.subject_distance > DEFAULT_SUBJECT_REVIEW_THRESHOLD
    assert _reasons(facts) == ["subject_mismatch"]


@pytest.mark.shared_media
def test_public_figure_blocked_from_one_photo_is_denied_in_another(
    session: Session, analyzer: FaceAnalyzer, subject_id: str, shared_media: Path
) -> None:
    celeb = shared_media / "celebrities"
    obama = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label="Barack Obama", reason="public figure"),
        photo=ReferencePhoto(
            image_rgb=rgb(celeb / "obama_face_recognition.jpg"),
            content=(celeb / "obama_face_recognition.jpg").read_bytes(),
        ),
        analyzer=analyzer,
        created_by="admin:test",
    )
    session.commit()
    for photo in ("obama_small.jpg", "two_people_obama_biden.jpg"):
        facts = assess(session, analyzer, rgb(celeb / photo), subject_id)
        assert facts.blocked_identity_id == obama.id, photo
        assert {"blocked_identity", "possible_protected_identity"} & set(_reasons(facts)), photo
    biden = assess(session, analyzer, rgb(celeb / "biden_face_recognition.jpg"), subject_id)
    assert biden.blocked_identity_id is None
    assert _reasons(biden) == ["subject_mismatch"]


@pytest.mark.shared_media
@pytest.mark.parametrize(
    ("blocked_from", "probe"),
    [
        ("angelina_jolie_facenet.jpg", "angelina_jolie_deepface_img5.jpg"),
        ("angelina_jolie_deepface_img5.jpg", "angelina_jolie_facenet.jpg"),
        ("obama_small.jpg", "obama_face_recognition.jpg"),
        ("biden_face_recognition.jpg", "two_people_obama_biden.jpg"),
    ],
)
def test_every_celebrity_with_two_photos_is_caught_from_the_other(
    session: Session, analyzer: FaceAnalyzer, subject_id: str, shared_media: Path, blocked_from: str, probe: str
) -> None:
    celeb = shared_media / "celebrities"
    entry = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label=blocked_from, reason="public figure"),
        photo=ReferencePhoto(image_rgb=rgb(celeb / blocked_from), content=(celeb / blocked_from).read_bytes()),
        analyzer=analyzer,
        created_by="admin:test",
    )
    facts = assess(session, analyzer, rgb(celeb / probe), subject_id)
    assert facts.blocked_identity_id == entry.id
    # Refused: blocked outright or held for review, never allowed.
    assert {"blocked_identity", "possible_protected_identity"} & set(_reasons(facts))


# --- bands, constructed: a reference at an exact distance from the astronaut's own embedding -----------------


def _at_distance(embedding: np.ndarray, distance: float, seed: int = 0) -> list[float]:
    direction = np.random.default_rng(seed).normal(size=embedding.shape)
    direction /= np.linalg.norm(direction)
    return [float(v) for v in np.asarray(embedding, np.float64) + distance * direction]


@pytest.fixture(scope="module")
def astronaut_embedding(analyzer: FaceAnalyzer, astronaut: np.ndarray) -> np.ndarray:
    return analyzer.faces(astronaut)[0].embedding


@pytest.mark.parametrize(
    ("distance", "reasons"),
    [
        (DEFAULT_BLOCK_MATCH_THRESHOLD - 0.01, ["blocked_identity"]),
        (DEFAULT_BLOCK_MATCH_THRESHOLD + 0.01, ["possible_protected_identity"]),
        (0.551, ["possible_protected_identity"]),  # issue 15's missed public figure
        (DEFAULT_BLOCK_REVIEW_THRESHOLD - 0.01, ["possible_protected_identity"]),
        (DEFAULT_BLOCK_REVIEW_THRESHOLD + 0.01, []),
    ],
)
def test_block_band_constructed(
    session: Session,
    analyzer: FaceAnalyzer,
    astronaut: np.ndarray,
    astronaut_embedding: np.ndarray,
    subject_id: str,
    distance: float,
    reasons: list[str],
) -> None:
    from safeguards.consent import BlockedIdentity

    row = BlockedIdentity(
        label="constructed",
        reason="test",
        embedding=_at_distance(astronaut_embedding, distance),
        embedder=analyzer.embedder.name,
        photo_sha256="0" * 64,
        created_at=T0,
        created_by="admin:test",
    )
    session.add(row)
    session.commit()
    facts = assess(session, analyzer, astronaut, subject_id)
    assert _reasons(facts) == reasons
    if reasons:
        assert facts.blocked_identity_id == row.id
        assert facts.blocked_distance == pytest.approx(distance, abs=1e-4)
    else:
        assert facts.blocked_identity_id is None


@pytest.mark.parametrize(
    ("distance", "reasons"),
    [
        (DEFAULT_SUBJECT_MATCH_THRESHOLD - 0.01, []),
        (DEFAULT_SUBJECT_MATCH_THRESHOLD + 0.01, ["subject_uncertain"]),
        (DEFAULT_SUBJECT_REVIEW_THRESHOLD - 0.01, ["subject_uncertain"]),
        (DEFAULT_SUBJECT_REVIEW_THRESHOLD + 0.01, ["subject_mismatch"]),
    ],
)
def test_subject_band_constructed(
    session: Session,
    analyzer: FaceAnalyzer,
    astronaut: np.ndarray,
    astronaut_embedding: np.ndarray,
    distance: float,
    reasons: list[str],
) -> None:
    from safeguards.consent import Subject, SubjectReference

    subject = Subject(display_name="constructed", created_at=T0, created_by="admin:test")
    session.add(subject)
    session.flush()
    session.add(
        SubjectReference(
            subject_id=subject.id,
            embedding=_at_distance(astronaut_embedding, distance, seed=1),
            embedder=analyzer.embedder.name,
            photo_sha256="1" * 64,
            created_at=T0,
        )
    )
    grant_consent(
        session=session,
        consent_in=ConsentCreate(
            subject_id=subject.id,
            purposes=["education"],
            allowed_clients=["client_a"],
            expires_at=T0 + timedelta(days=30),
            evidence_sha256=hashlib.sha256(b"form").hexdigest(),
        ),
        granted_by="admin:test",
        now=T0,
    )
    session.commit()
    facts = assess(session, analyzer, astronaut, subject.id)
    assert facts.subject_distance == pytest.approx(distance, abs=1e-4)
    assert _reasons(facts) == reasons


def test_a_poor_photo_widens_the_bands(
    session: Session, analyzer: FaceAnalyzer, astronaut: np.ndarray, subject_id: str
) -> None:
    import cv2

    blurred = cv2.GaussianBlur(astronaut, (0, 0), 4)
    facts = assess(session, analyzer, blurred, subject_id)
    assert "blurry" in facts.face_quality_issues
    margin = IdentityThresholds().poor_photo_margin
    assert facts.subject_match_threshold == pytest.approx(DEFAULT_SUBJECT_MATCH_THRESHOLD - margin)
    assert facts.subject_review_threshold == pytest.approx(DEFAULT_SUBJECT_REVIEW_THRESHOLD + margin)
    # The outright block never moves for a poor photo: only the review reaches farther.
    assert facts.block_match_threshold == DEFAULT_BLOCK_MATCH_THRESHOLD
    assert facts.block_review_threshold == pytest.approx(DEFAULT_BLOCK_REVIEW_THRESHOLD + margin)
