"""Consent registry: enrollment, consent lifecycle and block list, on SQLite and PostgreSQL, with real faces."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from sqlmodel import Session

from safeguards.blocklist import block_identity, closest_blocked, list_blocked, unblock_identity
from safeguards.consent import (
    BlockedIdentityCreate,
    BlockedIdentityPublic,
    ConsentCreate,
    SubjectCreate,
    SubjectPublic,
    SubjectReferencePublic,
)
from safeguards.consent_records import consent_status, grant_consent, list_consents, revoke_consent
from safeguards.enrollment import add_reference, enroll_subject
from safeguards.errors import (
    BlockedIdentityMatch,
    BlockedIdentityNotFound,
    ConsentNotFound,
    InvalidConsentRequest,
    MissingReferencePhoto,
    MultipleFacesInPhoto,
    NoFaceInPhoto,
    PhotoStorageNotConfigured,
    ReferenceMismatch,
    SubjectNotFound,
)
from safeguards.identity import (
    DEFAULT_BLOCK_MATCH_THRESHOLD,
    DEFAULT_SUBJECT_MATCH_THRESHOLD,
    FaceAnalyzer,
)
from safeguards.likeness import closest_reference_distance
from safeguards.reference_photos import ReferencePhoto
from safeguards.subjects import get_subject, list_references, list_subjects

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EVIDENCE = hashlib.sha256(b"signed consent form").hexdigest()


def _photo_from_array(image: np.ndarray) -> ReferencePhoto:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return ReferencePhoto(image_rgb=image, content=buf.getvalue())


def _photo_from_file(path: Path) -> ReferencePhoto:
    data = path.read_bytes()
    return ReferencePhoto(image_rgb=np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), content=data)


@pytest.fixture(scope="module")
def astronaut(example_photo: Path) -> ReferencePhoto:
    return _photo_from_file(example_photo)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture()
def session(engine: Any) -> Any:
    with Session(engine) as s:
        yield s


def _enroll(session: Session, analyzer: FaceAnalyzer, photo: ReferencePhoto, **kw: Any) -> Any:
    return enroll_subject(
        session=session,
        subject_in=SubjectCreate(display_name=kw.pop("name", "Eileen Collins"), store_photos=kw.pop("store", False)),
        photos=[photo],
        analyzer=analyzer,
        created_by="admin:test",
        block_threshold=DEFAULT_BLOCK_MATCH_THRESHOLD,
        now=T0,
        **kw,
    )


def _grant(session: Session, subject_id: str, *, at: datetime, days: float = 30, **kw: Any) -> Any:
    consent = ConsentCreate(
        subject_id=subject_id,
        purposes=kw.get("purposes", ["education"]),
        allowed_clients=kw.get("clients", ["client_a"]),
        expires_at=at + timedelta(days=days),
        evidence_sha256=EVIDENCE,
    )
    return grant_consent(session=session, consent_in=consent, granted_by="admin:test", now=at)


def test_enroll_stores_embedding_and_hash_not_the_photo(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, tmp_path: Path
) -> None:
    photo_dir = tmp_path / "photos"
    subject = _enroll(session, analyzer, astronaut, photo_dir=photo_dir)
    session.commit()
    assert subject.id.startswith("subj_") and subject.created_at == T0
    refs = list_references(session=session, subject_id=subject.id)
    assert len(refs) == 1
    assert refs[0].photo_sha256 == hashlib.sha256(astronaut.content).hexdigest()
    assert refs[0].photo_path is None and not photo_dir.exists()
    assert len(refs[0].embedding) == 128 and refs[0].embedder == "dlib_resnet_v1"
    # Reads back as aware UTC on both databases.
    session.expire_all()
    again = get_subject(session=session, subject_id=subject.id)
    assert again.created_at == T0 and again.created_at.tzinfo is not None
    assert [s.id for s in list_subjects(session=session)] == [subject.id]
    # The same face scores ~0 against its own reference.
    own = closest_reference_distance(
        session=session,
        subject_id=subject.id,
        embedding=np.asarray(refs[0].embedding),
        embedder="dlib_resnet_v1",
    )
    assert own == pytest.approx(0.0, abs=1e-6)
    other = closest_reference_distance(
        session=session, subject_id=subject.id, embedding=np.zeros(512), embedder="facenet_vggface2"
    )
    assert other is None


def test_photos_are_stored_only_when_subject_allows_and_storage_is_configured(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto, tmp_path: Path
) -> None:
    with pytest.raises(PhotoStorageNotConfigured) as info:
        _enroll(session, analyzer, astronaut, store=True)
    assert info.value.code == "photo_storage_not_configured"
    subject = _enroll(session, analyzer, astronaut, store=True, photo_dir=tmp_path)
    ref = list_references(session=session, subject_id=subject.id)[0]
    assert ref.photo_path is not None
    stored = Path(ref.photo_path)
    assert stored.read_bytes() == astronaut.content and stored.suffix == ".png"
    assert stored.stat().st_mode & 0o777 == 0o600


def test_public_models_never_carry_embeddings_or_paths() -> None:
    for model in (SubjectPublic, BlockedIdentityPublic, SubjectReferencePublic):
        assert "embedding" not in model.model_fields
        assert "photo_path" not in model.model_fields


def test_enrollment_needs_exactly_one_face(session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto) -> None:
    with pytest.raises(NoFaceInPhoto) as no_face:
        _enroll(session, analyzer, _photo_from_array(np.full((240, 320, 3), 90, np.uint8)))
    assert no_face.value.code == "no_face"
    two = np.hstack([astronaut.image_rgb, astronaut.image_rgb])
    with pytest.raises(MultipleFacesInPhoto) as many:
        _enroll(session, analyzer, _photo_from_array(two))
    assert many.value.code == "multiple_faces" and many.value.count == 2
    with pytest.raises(MissingReferencePhoto):
        enroll_subject(
            session=session,
            subject_in=SubjectCreate(display_name="x"),
            photos=[],
            analyzer=analyzer,
            created_by="t",
            block_threshold=0.5,
        )
    assert list_subjects(session=session) == []  # nothing half-written


def test_consent_lifecycle_grant_expire_revoke_regrant(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto
) -> None:
    subject = _enroll(session, analyzer, astronaut)
    assert consent_status(session=session, subject_id=subject.id, at=T0) == ("none", None)

    first = _grant(session, subject.id, at=T0, days=10, purposes=["education", "marketing"])
    session.commit()
    assert first.id.startswith("cons_") and first.purposes == ["education", "marketing"]
    state, record = consent_status(session=session, subject_id=subject.id, at=T0 + timedelta(days=1))
    assert state == "active" and record is not None and record.id == first.id
    assert record.allowed_clients == ["client_a"]
    assert consent_status(session=session, subject_id=subject.id, at=T0 - timedelta(seconds=1))[0] == "none"
    assert consent_status(session=session, subject_id=subject.id, at=T0 + timedelta(days=10))[0] == "expired"

    # Revocation takes effect at once, for that instant and after; not retroactively.
    revoked = revoke_consent(
        session=session,
        subject_id=subject.id,
        revoked_by="subject:self",
        reason="changed my mind",
        now=T0 + timedelta(days=2),
    )
    session.commit()
    assert revoked.id == first.id and revoked.revoked_by == "subject:self"
    assert consent_status(session=session, subject_id=subject.id, at=T0 + timedelta(days=2))[0] == "revoked"
    assert consent_status(session=session, subject_id=subject.id, at=T0 + timedelta(days=1))[0] == "active"
    with pytest.raises(ConsentNotFound):
        revoke_consent(session=session, subject_id=subject.id, revoked_by="x", reason="again")

    # A new grant is newer, so it wins over the revoked one.
    second = _grant(session, subject.id, at=T0 + timedelta(days=3), clients=["*"])
    session.commit()
    state, record = consent_status(session=session, subject_id=subject.id, at=T0 + timedelta(days=4))
    assert state == "active" and record is not None and record.id == second.id
    assert record.allowed_clients == ["*"]
    assert [r.id for r in list_consents(session=session, subject_id=subject.id)] == [second.id, first.id]
    session.expire_all()
    stored = list_consents(session=session, subject_id=subject.id)[1]
    assert stored.revoked_at == T0 + timedelta(days=2) and stored.revocation_reason == "changed my mind"


def test_grant_is_validated(session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto) -> None:
    with pytest.raises(SubjectNotFound) as missing:
        _grant(session, "subj_nobody", at=T0)
    assert missing.value.code == "subject_not_found"
    subject = _enroll(session, analyzer, astronaut)
    with pytest.raises(InvalidConsentRequest) as past:
        _grant(session, subject.id, at=T0, days=-1)
    assert past.value.code == "invalid_consent"
    base = {"subject_id": subject.id, "expires_at": T0 + timedelta(days=1), "evidence_sha256": EVIDENCE}
    with pytest.raises(ValidationError):
        ConsentCreate(**{**base, "purposes": [], "allowed_clients": ["a"]})
    with pytest.raises(ValidationError):
        ConsentCreate(**{**base, "purposes": ["bad purpose!"], "allowed_clients": ["a"]})
    with pytest.raises(ValidationError):
        ConsentCreate(**{**base, "purposes": ["a"], "allowed_clients": ["a"], "evidence_sha256": "abc"})
    naive = ConsentCreate(**{**base, "purposes": ["b", "a", "a"], "allowed_clients": ["c"]})
    assert naive.purposes == ["a", "b"]


def test_revoke_one_named_record(session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto) -> None:
    subject = _enroll(session, analyzer, astronaut)
    old = _grant(session, subject.id, at=T0)
    new = _grant(session, subject.id, at=T0 + timedelta(hours=1))
    with pytest.raises(ConsentNotFound):
        revoke_consent(session=session, subject_id=subject.id, consent_id="cons_other", revoked_by="x", reason="r")
    done = revoke_consent(session=session, subject_id=subject.id, consent_id=old.id, revoked_by="x", reason="r")
    assert done.id == old.id and new.revoked_at is None
    # Without an id, everything still unrevoked goes, and the newest record is returned.
    third = _grant(session, subject.id, at=T0 + timedelta(hours=2))
    latest = revoke_consent(session=session, subject_id=subject.id, revoked_by="x", reason="r")
    assert latest.id == third.id and new.revoked_at is not None


def test_block_list_refuses_enrollment_and_can_be_lifted(
    session: Session, analyzer: FaceAnalyzer, astronaut: ReferencePhoto
) -> None:
    blocked = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label="Eileen Collins", reason="public figure"),
        photo=astronaut,
        analyzer=analyzer,
        created_by="admin:test",
        now=T0,
    )
    session.commit()
    assert blocked.id.startswith("blk_")
    # Another picture of the same face (mirrored, darker) is refused.
    variant = (astronaut.image_rgb[:, ::-1].astype(np.float32) * 0.8).astype(np.uint8)
    with pytest.raises(BlockedIdentityMatch) as info:
        _enroll(session, analyzer, _photo_from_array(variant))
    assert info.value.code == "blocked_identity" and info.value.blocked_id == blocked.id
    assert info.value.distance <= DEFAULT_BLOCK_MATCH_THRESHOLD

    unblock_identity(session=session, blocked_id=blocked.id, removed_by="admin:test", now=T0)
    session.commit()
    assert list_blocked(session=session) == []
    assert [b.id for b in list_blocked(session=session, include_removed=True)] == [blocked.id]
    assert closest_blocked(session=session, embedding=np.zeros(128), embedder="dlib_resnet_v1") is None
    with pytest.raises(BlockedIdentityNotFound):
        unblock_identity(session=session, blocked_id=blocked.id, removed_by="admin:test")
    _enroll(session, analyzer, _photo_from_array(variant))  # allowed again


@pytest.mark.shared_media
def test_block_list_catches_obama_in_another_photo(
    session: Session, analyzer: FaceAnalyzer, shared_media: Path
) -> None:
    celeb = shared_media / "celebrities"
    blocked = block_identity(
        session=session,
        blocked_in=BlockedIdentityCreate(label="Barack Obama", reason="public figure"),
        photo=_photo_from_file(celeb / "obama_face_recognition.jpg"),
        analyzer=analyzer,
        created_by="admin:test",
    )
    with pytest.raises(BlockedIdentityMatch) as info:
        _enroll(session, analyzer, _photo_from_file(celeb / "obama_small.jpg"), name="Not Obama")
    assert info.value.blocked_id == blocked.id
    # Different people are not caught by it.
    for other in ("biden_face_recognition.jpg", "kate_siegel_facenet.jpg"):
        face = analyzer.faces(_photo_from_file(celeb / other).image_rgb)[0]
        hit = closest_blocked(session=session, embedding=face.embedding, embedder=analyzer.embedder.name)
        assert hit is not None and hit[1] > DEFAULT_BLOCK_MATCH_THRESHOLD


@pytest.mark.shared_media
def test_add_reference_checks_it_is_the_same_person(
    session: Session, analyzer: FaceAnalyzer, shared_media: Path
) -> None:
    celeb = shared_media / "celebrities"
    subject = _enroll(session, analyzer, _photo_from_file(celeb / "angelina_jolie_facenet.jpg"), name="AJ")
    with pytest.raises(ReferenceMismatch) as info:
        add_reference(
            session=session,
            subject_id=subject.id,
            photo=_photo_from_file(celeb / "kate_siegel_facenet.jpg"),
            analyzer=analyzer,
            block_threshold=DEFAULT_BLOCK_MATCH_THRESHOLD,
            reference_threshold=DEFAULT_SUBJECT_MATCH_THRESHOLD,
        )
    assert info.value.code == "reference_mismatch"
    ref = add_reference(
        session=session,
        subject_id=subject.id,
        photo=_photo_from_file(celeb / "angelina_jolie_deepface_img5.jpg"),
        analyzer=analyzer,
        block_threshold=DEFAULT_BLOCK_MATCH_THRESHOLD,
        reference_threshold=DEFAULT_SUBJECT_MATCH_THRESHOLD,
    )
    assert ref.subject_id == subject.id
    assert len(list_references(session=session, subject_id=subject.id)) == 2
