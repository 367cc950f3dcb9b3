"""Consent registry tables: who may be animated, for what, by whom, until when, and whose likeness nobody may use.

Tables (prefixed `consent_`, portable between SQLite and PostgreSQL):

- `Subject` — a person who can consent; enrolled from one or more reference photos.
- `SubjectReference` — one face embedding per reference photo, with the photo's SHA-256. The photo itself is kept
  only when the subject allows it (`store_photos`) AND the service is configured with a photo directory.
- `ErasedFingerprint` — what an erasure keeps of a reference photo: a keyed fingerprint of the file.
- `ConsentRecord` — purposes, allowed API clients, expiry, evidence hash; revocable. The newest record wins.
- `BlockedIdentity` — a protected likeness (e.g. a public figure) that no photo may match, enrolled or not.
- `BlockedReference` — one face embedding per photo of a blocked identity (several photos, better recall).
- `IdentityReview` (safeguards/reviews.py) — a borderline likeness held for a consent officer. Importing this module
  registers it with the other consent tables.

Each resource follows the `XBase / XCreate / X(table=True) / XPublic` split, so embeddings and file paths never
reach an API response: return `XPublic.model_validate(row)`.

What works on them, one job per module: `subjects` (lookups), `enrollment` (reference photos -> subject),
`consent_records` (grant, revoke, state at a time), `blocklist` (protected likenesses and the nearest one),
`likeness` (a face against a person's references), `reviews` (the human-review queue).
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import field_validator
from sqlalchemy import JSON
from sqlmodel import Field, SQLModel

from safeguards import reviews as _reviews  # noqa: F401  (registers the review table with the other consent tables)
from safeguards.db_types import UTCDateTime, as_utc, new_id

__all__ = [
    "ANY_CLIENT",
    "BlockedIdentity",
    "BlockedIdentityCreate",
    "BlockedIdentityPublic",
    "BlockedReference",
    "ConsentCreate",
    "ConsentRecord",
    "ConsentRecordPublic",
    "ErasedFingerprint",
    "Subject",
    "SubjectCreate",
    "SubjectPublic",
    "SubjectReference",
    "SubjectReferencePublic",
]

# In `allowed_clients`, this entry means "any authenticated client of this service" (the policy honours it).
ANY_CLIENT = "*"
_SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"
_SHA256 = r"^[0-9a-f]{64}$"


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
    from the service secret; see service/fingerprints.py::keyed_fingerprint), so the same photo cannot enroll the
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
        return as_utc(value)


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
