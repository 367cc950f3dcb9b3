"""Consent registry: who may be animated, for what, by whom, until when, and whose likeness nobody may use.

Tables (prefixed `consent_`, portable between SQLite and PostgreSQL):

- `Subject` — a person who can consent; enrolled from one or more reference photos.
- `SubjectReference` — one face embedding per reference photo, with the photo's SHA-256. The photo itself is kept
  only when the subject allows it (`store_photos`) AND the service is configured with a photo directory.
- `ConsentRecord` — purposes, allowed API clients, expiry, evidence hash; revocable. The newest record wins.
- `BlockedIdentity` — a protected likeness (e.g. a public figure) that no photo may match, enrolled or not.
- `BlockedReference` — one face embedding per photo of a blocked identity (several photos, better recall).
- `IdentityReview` (safeguards/reviews.py) — a borderline likeness held for a consent officer.

Likeness against several reference photos is scored two ways (`IdentityScore`): the distance to the nearest
reference and the distance to the mean of the references. The block list takes the smaller (either view close is
reason to stop), the subject check the larger (a stranger must be far from neither).

Each resource follows the `XBase / XCreate / X(table=True) / XPublic` split, so embeddings and file paths never
reach an API response: return `XPublic.model_validate(row)`.

Data functions take keyword-only arguments and a `session`; none of them commits (the caller owns the transaction
and audits the change in the same unit of work). Times are timezone-aware UTC; a naive datetime is taken as UTC.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import field_validator
from sqlalchemy import JSON, DateTime, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlmodel import Field, Session, SQLModel, col, select

from policies.facts import ConsentState
from safeguards.errors import (
    BlockedIdentityMatch,
    BlockedIdentityNotFound,
    ConsentNotFound,
    EmbeddingMismatch,
    InvalidConsentRequest,
    MissingReferencePhoto,
    MultipleFacesInPhoto,
    NoFaceInPhoto,
    PhotoStorageNotConfigured,
    PossibleBlockedIdentityMatch,
    ReferenceMismatch,
    SubjectNotFound,
)
from safeguards.identity import FaceAnalyzer, face_distance

__all__ = [
    "ANY_CLIENT",
    "BandHit",
    "BlockedIdentity",
    "BlockedIdentityCreate",
    "BlockedIdentityPublic",
    "BlockedReference",
    "IdentityScore",
    "ConsentCreate",
    "ConsentRecord",
    "ConsentRecordPublic",
    "ErasedFingerprint",
    "ReferencePhoto",
    "Subject",
    "SubjectCreate",
    "SubjectPublic",
    "SubjectReference",
    "SubjectReferencePublic",
    "add_block_references",
    "add_reference",
    "block_identity",
    "blocked_references",
    "closest_blocked",
    "closest_blocked_score",
    "closest_reference_distance",
    "consent_status",
    "get_subject",
    "grant_consent",
    "list_blocked",
    "list_consents",
    "list_references",
    "list_subjects",
    "new_id",
    "reference_score",
    "revoke_consent",
    "unblock_identity",
]

# In `allowed_clients`, this entry means "any authenticated client of this service" (the policy honours it).
ANY_CLIENT = "*"
_SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
_SHA256 = r"^[0-9a-f]{64}$"


def new_id(prefix: str) -> str:
    """A random, unguessable id like `subj_3f9c1a7be0d24c5e` (prefix says what it names)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def _utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive input is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return _utc(now) if now is not None else datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always reads back timezone-aware UTC, on SQLite (which drops the zone) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = _utc(value)
        # SQLite stores text without a zone: store UTC wall time, so ordering and comparison stay correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _utc(value)


# --- subjects ------------------------------------------------------------------------------------------------


class SubjectBase(SQLModel):
    display_name: str = Field(min_length=1, max_length=200)
    # Keep the reference photos themselves (not just their embeddings and hashes)? Off unless the subject agrees.
    store_photos: bool = False


class SubjectCreate(SubjectBase):
    pass


class Subject(SubjectBase, table=True):
    __tablename__ = "consent_subject"

    id: str = Field(default_factory=lambda: new_id("subj"), primary_key=True, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=255)
    # Erased (GDPR Art. 17): the row stays as a tombstone (its consent records and the audit log point at it), with
    # its name cleared and every reference embedding, photo hash and file of the person deleted.
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    erased_by: str | None = Field(default=None, max_length=255)


class SubjectPublic(SubjectBase):
    id: str
    created_at: datetime
    created_by: str
    erased_at: datetime | None = None


class SubjectReference(SQLModel, table=True):
    """One reference face of a subject. `embedding` is a likeness: never return it from the API."""

    __tablename__ = "consent_subject_reference"

    id: int | None = Field(default=None, primary_key=True)
    subject_id: str = Field(foreign_key="consent_subject.id", index=True, max_length=40)
    embedding: list[float] = Field(sa_type=JSON)
    embedder: str = Field(max_length=64)
    photo_sha256: str = Field(max_length=64)
    photo_path: str | None = Field(default=None, max_length=1024)
    created_at: datetime = Field(sa_type=UTCDateTime)


class SubjectReferencePublic(SQLModel):
    id: int
    subject_id: str
    embedder: str
    photo_sha256: str
    photo_stored: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: SubjectReference) -> SubjectReferencePublic:
        return cls(
            id=row.id or 0,
            subject_id=row.subject_id,
            embedder=row.embedder,
            photo_sha256=row.photo_sha256,
            photo_stored=row.photo_path is not None,
            created_at=row.created_at,
        )


class ErasedFingerprint(SQLModel, table=True):
    """What an erasure keeps of a reference photo: a keyed fingerprint of its bytes (HMAC-SHA256 under a key derived
    from the service secret; see service/consent_ops.py::keyed_fingerprint), so the same photo cannot enroll the
    erased person again without a new consent. It is not a likeness: it matches only the identical file, and without
    the service secret it cannot be tested against any photo."""

    __tablename__ = "consent_erased_fingerprint"

    fingerprint: str = Field(primary_key=True, max_length=64)
    subject_id: str = Field(foreign_key="consent_subject.id", index=True, max_length=40)
    erased_at: datetime = Field(sa_type=UTCDateTime)


# --- consent records -----------------------------------------------------------------------------------------


class ConsentRecordBase(SQLModel):
    subject_id: str = Field(foreign_key="consent_subject.id", index=True, max_length=40)
    # What the subject agreed to (e.g. "education", "marketing"); a request must name one of them.
    purposes: list[str] = Field(sa_type=JSON)
    # API client ids allowed to generate with this subject; ANY_CLIENT ("*") allows every client.
    allowed_clients: list[str] = Field(sa_type=JSON)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    # SHA-256 (hex) of the consent evidence (signed form, recording); the evidence itself is kept elsewhere.
    evidence_sha256: str = Field(max_length=64)


class ConsentCreate(ConsentRecordBase):
    """A consent grant as submitted; validated on construction."""

    @field_validator("purposes", "allowed_clients")
    @classmethod
    def _non_empty_slugs(cls, values: list[str]) -> list[str]:
        cleaned = sorted({v.strip() for v in values})
        if not cleaned:
            raise ValueError("at least one entry is required")
        bad = [v for v in cleaned if v != ANY_CLIENT and not re.match(_SLUG, v)]
        if bad:
            raise ValueError(f"invalid entries {bad}: use letters, digits and _.:@- (max 128 chars)")
        return cleaned

    @field_validator("evidence_sha256")
    @classmethod
    def _hex_sha256(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.match(_SHA256, value):
            raise ValueError("evidence_sha256 must be 64 hex characters (the SHA-256 of the consent evidence)")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _utc(value)


class ConsentRecord(ConsentRecordBase, table=True):
    __tablename__ = "consent_record"

    id: str = Field(default_factory=lambda: new_id("cons"), primary_key=True, max_length=40)
    granted_at: datetime = Field(sa_type=UTCDateTime, index=True)
    granted_by: str = Field(max_length=255)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=255)
    revocation_reason: str | None = Field(default=None, max_length=1000)


class ConsentRecordPublic(ConsentRecordBase):
    id: str
    granted_at: datetime
    granted_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None


# --- block list ----------------------------------------------------------------------------------------------


class BlockedIdentityBase(SQLModel):
    label: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=1000)


class BlockedIdentityCreate(BlockedIdentityBase):
    pass


class BlockedIdentity(BlockedIdentityBase, table=True):
    """A protected likeness. `embedding` is a likeness: never return it from the API."""

    __tablename__ = "consent_blocked_identity"

    id: str = Field(default_factory=lambda: new_id("blk"), primary_key=True, max_length=40)
    embedding: list[float] = Field(sa_type=JSON)
    embedder: str = Field(max_length=64)
    photo_sha256: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=255)
    # Unblocking keeps the row (who protected whom, and who lifted it, stays on record).
    removed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    removed_by: str | None = Field(default=None, max_length=255)


class BlockedIdentityPublic(BlockedIdentityBase):
    id: str
    embedder: str
    photo_sha256: str
    created_at: datetime
    created_by: str
    removed_at: datetime | None
    removed_by: str | None


class BlockedReference(SQLModel, table=True):
    """One photo's embedding of a blocked identity. `BlockedIdentity.embedding` keeps the first photo's (so a row
    made before multi-photo blocking still works alone); every photo, the first included, has a row here."""

    __tablename__ = "consent_blocked_reference"

    id: int | None = Field(default=None, primary_key=True)
    blocked_id: str = Field(foreign_key="consent_blocked_identity.id", index=True, max_length=40)
    embedding: list[float] = Field(sa_type=JSON)
    embedder: str = Field(max_length=64)
    photo_sha256: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)


# --- likeness scores -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityScore:
    """A face against one person's reference embeddings: nearest reference and distance to their mean."""

    nearest: float
    to_mean: float
    references: int

    @property
    def block_distance(self) -> float:
        """For the block list: the smaller view (either one close is reason enough to stop)."""
        return min(self.nearest, self.to_mean)

    @property
    def subject_distance(self) -> float:
        """For the subject: the larger view (a stranger close to one odd reference is still far from the mean)."""
        return max(self.nearest, self.to_mean)


def score_references(references: np.ndarray, embedding: np.ndarray) -> IdentityScore:
    """Score `embedding` against `references` (N, dim) of one person and one embedder."""
    refs = np.asarray(references, dtype=np.float64).reshape(-1, np.asarray(embedding).size)  # (N, dim)
    query = np.asarray(embedding, dtype=np.float64).ravel()
    nearest = float(np.min(np.linalg.norm(refs - query[None, :], axis=1)))
    to_mean = float(np.linalg.norm(refs.mean(axis=0) - query))
    return IdentityScore(nearest=nearest, to_mean=to_mean, references=int(refs.shape[0]))


@dataclass(frozen=True)
class BandHit:
    """A reference photo that fell into the block list's review band and was let through by a consent officer."""

    photo_sha256: str
    blocked_id: str
    distance: float


# --- reference photos ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferencePhoto:
    """A decoded reference photo plus the bytes it was decoded from (hashed, and stored only when allowed)."""

    image_rgb: np.ndarray
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def suffix(self) -> str:
        """File suffix from the content's magic bytes (for the stored copy)."""
        if self.content.startswith(b"\x89PNG"):
            return ".png"
        if self.content.startswith(b"\xff\xd8"):
            return ".jpg"
        if self.content[:4] == b"RIFF" and self.content[8:12] == b"WEBP":
            return ".webp"
        return ".img"


def _single_face_embedding(analyzer: FaceAnalyzer, photo: ReferencePhoto) -> np.ndarray:
    """The embedding of the one face in a reference photo; a reference must show exactly one face."""
    faces = analyzer.faces(photo.image_rgb)
    smallest = analyzer.smallest_counted_face_px(*photo.image_rgb.shape[:2])
    if not faces:
        raise NoFaceInPhoto(
            f"no face {smallest} px wide or more was found in the reference photo; use a clear, frontal photo of "
            "the subject"
        )
    if len(faces) > 1:
        raise MultipleFacesInPhoto(len(faces), smallest)
    return faces[0].embedding


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
    subject = Subject.model_validate(subject_in, update={"created_at": _now(now), "created_by": created_by})
    embeddings: list[np.ndarray] = []
    hits: list[BandHit] = []
    for photo in photos:
        embedding = _single_face_embedding(analyzer, photo)
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
    embedding = _single_face_embedding(analyzer, photo)
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
        created_at=_now(now),
    )
    session.add(reference)
    session.flush()
    return reference


def get_subject(*, session: Session, subject_id: str) -> Subject:
    """The subject with this id. Raises SubjectNotFound."""
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise SubjectNotFound(subject_id)
    return subject


def list_subjects(*, session: Session, offset: int = 0, limit: int = 100) -> list[Subject]:
    """Subjects, oldest first."""
    stmt = select(Subject).order_by(col(Subject.created_at), col(Subject.id)).offset(offset).limit(limit)
    return list(session.exec(stmt).all())


def list_references(*, session: Session, subject_id: str) -> list[SubjectReference]:
    """A subject's reference embeddings, oldest first (internal: they carry embeddings)."""
    stmt = select(SubjectReference).where(SubjectReference.subject_id == subject_id).order_by(col(SubjectReference.id))
    return list(session.exec(stmt).all())


def reference_score(
    *, session: Session, subject_id: str, embedding: np.ndarray, embedder: str
) -> IdentityScore | None:
    """`embedding` against the subject's references made by the same embedder; None if there are none."""
    refs = [r.embedding for r in list_references(session=session, subject_id=subject_id) if r.embedder == embedder]
    if not refs:
        return None
    matrix = np.asarray(refs, dtype=np.float64)  # (N, dim)
    if matrix.shape[1] != np.asarray(embedding).size:
        raise EmbeddingMismatch(
            f"subject {subject_id} has {matrix.shape[1]}-d references, the query has {np.asarray(embedding).size}"
        )
    return score_references(matrix, embedding)


def closest_reference_distance(
    *, session: Session, subject_id: str, embedding: np.ndarray, embedder: str
) -> float | None:
    """The subject distance (`IdentityScore.subject_distance`: the larger of nearest reference and distance to the
    references' mean) from `embedding` to the subject; None without references of this embedder."""
    score = reference_score(session=session, subject_id=subject_id, embedding=embedding, embedder=embedder)
    return None if score is None else score.subject_distance


# --- consent -------------------------------------------------------------------------------------------------


def grant_consent(
    *, session: Session, consent_in: ConsentCreate, granted_by: str, now: datetime | None = None
) -> ConsentRecord:
    """Record a subject's consent. It supersedes earlier records (the newest record wins). Flushes, no commit.

    Raises:
        SubjectNotFound: the subject is not enrolled.
        InvalidConsentRequest: the expiry is not after the grant time.
    """
    get_subject(session=session, subject_id=consent_in.subject_id)
    granted_at = _now(now)
    if _utc(consent_in.expires_at) <= granted_at:
        raise InvalidConsentRequest(
            f"consent would expire at {consent_in.expires_at.isoformat()}, not after it is granted "
            f"({granted_at.isoformat()}); give a future expiry"
        )
    record = ConsentRecord.model_validate(consent_in, update={"granted_at": granted_at, "granted_by": granted_by})
    session.add(record)
    session.flush()
    return record


def revoke_consent(
    *,
    session: Session,
    subject_id: str,
    revoked_by: str,
    reason: str,
    consent_id: str | None = None,
    now: datetime | None = None,
) -> ConsentRecord:
    """Revoke the subject's consent, effective from `now`; returns the newest record revoked.

    Without `consent_id`, every unrevoked record of the subject is revoked (the newest is the one in force, the
    older ones are revoked too so none can be mistaken for live consent; `list_consents` shows them all). With
    `consent_id`, only that record. Flushes, no commit.

    Raises:
        SubjectNotFound: the subject is not enrolled.
        ConsentNotFound: nothing left to revoke (or `consent_id` is not one of this subject's unrevoked records).
    """
    get_subject(session=session, subject_id=subject_id)
    at = _now(now)
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.subject_id == subject_id, col(ConsentRecord.revoked_at).is_(None))
        .order_by(col(ConsentRecord.granted_at).desc(), col(ConsentRecord.id).desc())
    )
    if consent_id is not None:
        stmt = stmt.where(ConsentRecord.id == consent_id)
    records = list(session.exec(stmt).all())
    if not records:
        what = f"consent record {consent_id}" if consent_id else "an unrevoked consent record"
        raise ConsentNotFound(f"subject {subject_id} has no {what} to revoke")
    for record in records:
        record.revoked_at = at
        record.revoked_by = revoked_by
        record.revocation_reason = reason
        session.add(record)
    session.flush()
    return records[0]


def list_consents(*, session: Session, subject_id: str | None = None) -> list[ConsentRecord]:
    """Consent records, newest grant first; all subjects unless `subject_id` is given."""
    stmt = select(ConsentRecord).order_by(col(ConsentRecord.granted_at).desc(), col(ConsentRecord.id).desc())
    if subject_id is not None:
        stmt = stmt.where(ConsentRecord.subject_id == subject_id)
    return list(session.exec(stmt).all())


def consent_status(*, session: Session, subject_id: str, at: datetime) -> tuple[ConsentState, ConsentRecord | None]:
    """The subject's consent state at time `at`, judged on the newest record granted at or before `at`.

    States: "none" (no record), "revoked" (revoked at or before `at`), "expired" (expires at or before `at`),
    "active". The newest record wins: a fresh grant after a revocation makes consent active again, and a
    revoked newest record is not rescued by an older unrevoked one.
    """
    when = _utc(at)
    stmt = (
        select(ConsentRecord)
        .where(ConsentRecord.subject_id == subject_id, col(ConsentRecord.granted_at) <= when)
        .order_by(col(ConsentRecord.granted_at).desc(), col(ConsentRecord.id).desc())
        .limit(1)
    )
    record = session.exec(stmt).first()
    if record is None:
        return "none", None
    if record.revoked_at is not None and record.revoked_at <= when:
        return "revoked", record
    if record.expires_at <= when:
        return "expired", record
    return "active", record


# --- block list ----------------------------------------------------------------------------------------------


def block_identity(
    *,
    session: Session,
    blocked_in: BlockedIdentityCreate,
    photos: Sequence[ReferencePhoto] = (),
    analyzer: FaceAnalyzer,
    created_by: str,
    now: datetime | None = None,
    photo: ReferencePhoto | None = None,
) -> BlockedIdentity:
    """Protect the likeness in one or more photos of ONE person (each with exactly one face): several photos give
    the matcher a nearest reference and a mean to compare against. The photos themselves are never stored.
    Flushes, no commit. (`photo` is the single-photo form kept for older callers.)

    Raises:
        MissingReferencePhoto, NoFaceInPhoto, MultipleFacesInPhoto.
    """
    all_photos = [*([photo] if photo is not None else []), *photos]
    if not all_photos:
        raise MissingReferencePhoto("blocking an identity needs at least one photo of their face")
    embeddings = [_single_face_embedding(analyzer, p) for p in all_photos]
    at = _now(now)
    blocked = BlockedIdentity.model_validate(
        blocked_in,
        update={
            "embedding": [float(v) for v in embeddings[0]],
            "embedder": analyzer.embedder.name,
            "photo_sha256": all_photos[0].sha256,
            "created_at": at,
            "created_by": created_by,
        },
    )
    session.add(blocked)
    session.flush()
    _add_blocked_rows(session, blocked, all_photos, embeddings, analyzer.embedder.name, at)
    return blocked


def add_block_references(
    *,
    session: Session,
    blocked_id: str,
    photos: Sequence[ReferencePhoto],
    analyzer: FaceAnalyzer,
    now: datetime | None = None,
) -> list[BlockedReference]:
    """Add photos of the same person to an active block-list entry. Flushes, no commit.

    Raises:
        BlockedIdentityNotFound, MissingReferencePhoto, NoFaceInPhoto, MultipleFacesInPhoto.
    """
    blocked = session.get(BlockedIdentity, blocked_id)
    if blocked is None or blocked.removed_at is not None:
        raise BlockedIdentityNotFound(blocked_id)
    if not photos:
        raise MissingReferencePhoto("adding to a blocked identity needs at least one photo")
    embeddings = [_single_face_embedding(analyzer, p) for p in photos]
    if not blocked_references(session=session, blocked_ids=[blocked.id]):
        # A row from before multi-photo blocking: its one embedding becomes its first reference row.
        session.add(
            BlockedReference(
                blocked_id=blocked.id,
                embedding=list(blocked.embedding),
                embedder=blocked.embedder,
                photo_sha256=blocked.photo_sha256,
                created_at=blocked.created_at,
            )
        )
    return _add_blocked_rows(session, blocked, list(photos), embeddings, analyzer.embedder.name, _now(now))


def _add_blocked_rows(
    session: Session,
    blocked: BlockedIdentity,
    photos: Sequence[ReferencePhoto],
    embeddings: Sequence[np.ndarray],
    embedder: str,
    at: datetime,
) -> list[BlockedReference]:
    rows = [
        BlockedReference(
            blocked_id=blocked.id,
            embedding=[float(v) for v in emb],
            embedder=embedder,
            photo_sha256=p.sha256,
            created_at=at,
        )
        for p, emb in zip(photos, embeddings, strict=True)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def blocked_references(*, session: Session, blocked_ids: Sequence[str]) -> list[BlockedReference]:
    """The reference rows of these block-list entries, oldest first (internal: they carry embeddings)."""
    if not blocked_ids:
        return []
    stmt = (
        select(BlockedReference)
        .where(col(BlockedReference.blocked_id).in_(list(blocked_ids)))
        .order_by(col(BlockedReference.id))
    )
    return list(session.exec(stmt).all())


def list_blocked(*, session: Session, include_removed: bool = False) -> list[BlockedIdentity]:
    """Block-list entries, oldest first; unblocked ones only with `include_removed`."""
    stmt = select(BlockedIdentity).order_by(col(BlockedIdentity.created_at), col(BlockedIdentity.id))
    if not include_removed:
        stmt = stmt.where(col(BlockedIdentity.removed_at).is_(None))
    return list(session.exec(stmt).all())


def unblock_identity(
    *, session: Session, blocked_id: str, removed_by: str, now: datetime | None = None
) -> BlockedIdentity:
    """Lift a block (the row stays, marked removed). Flushes, no commit. Raises BlockedIdentityNotFound."""
    blocked = session.get(BlockedIdentity, blocked_id)
    if blocked is None or blocked.removed_at is not None:
        raise BlockedIdentityNotFound(blocked_id)
    blocked.removed_at = _now(now)
    blocked.removed_by = removed_by
    session.add(blocked)
    session.flush()
    return blocked


def closest_blocked_score(
    *, session: Session, embedding: np.ndarray, embedder: str
) -> tuple[BlockedIdentity, IdentityScore] | None:
    """The active block-list entry nearest to `embedding` by `IdentityScore.block_distance` (same embedder only);
    None if the list is empty.

    Linear scan over every reference: fine for thousands of entries; a vector index is the next step for more.
    """
    rows = [b for b in list_blocked(session=session) if b.embedder == embedder]
    if not rows:
        return None
    query = np.asarray(embedding, dtype=np.float64).ravel()
    by_id: dict[str, list[list[float]]] = {}
    for ref in blocked_references(session=session, blocked_ids=[b.id for b in rows]):
        if ref.embedder == embedder:
            by_id.setdefault(ref.blocked_id, []).append(ref.embedding)
    best: tuple[BlockedIdentity, IdentityScore] | None = None
    for row in rows:
        refs = np.asarray(by_id.get(row.id) or [row.embedding], dtype=np.float64)  # (N, dim)
        if refs.shape[1] != query.shape[0]:
            raise EmbeddingMismatch(
                f"block list holds {refs.shape[1]}-d {embedder} embeddings, the query has {query.shape[0]} values"
            )
        score = score_references(refs, query)
        if best is None or score.block_distance < best[1].block_distance:
            best = (row, score)
    return best


def closest_blocked(*, session: Session, embedding: np.ndarray, embedder: str) -> tuple[BlockedIdentity, float] | None:
    """The active block-list entry nearest to `embedding` and its block distance; None if the list is empty."""
    hit = closest_blocked_score(session=session, embedding=embedding, embedder=embedder)
    return None if hit is None else (hit[0], hit[1].block_distance)


# The review queue lives in its own module; importing it here registers its table with the other consent tables
# (it imports UTCDateTime and new_id from this module, which are defined above this line).
from safeguards import reviews as _reviews  # noqa: E402, F401
