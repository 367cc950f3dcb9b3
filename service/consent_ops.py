"""Consent operations shared by the CLI, the API and the console: enrol a subject with their first consent, grant
consent again, revoke it. Each one commits and is audited.

The registry functions in `safeguards` (enrollment, consent_records) measure and write; this module adds the
service's concerns (photo decoding under the upload limits, the audit entry, the commit, and what follows a change:
withdrawn videos, stopped jobs, webhooks). Erasure is `service.erasure`, the block list `service.blocklist_ops`,
identity reviews `service.identity_reviews`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, delete, select

from generation.media import load_image
from safeguards.consent import (
    ANY_CLIENT,
    ConsentCreate,
    ConsentRecord,
    ErasedFingerprint,
    Subject,
    SubjectCreate,
)
from safeguards.consent_records import grant_consent, revoke_consent
from safeguards.enrollment import BandHit, enroll_subject
from safeguards.reference_photos import ReferencePhoto
from safeguards.subjects import get_subject
from service import output_access, webhooks
from service.errors import InvalidInput, SubjectErased
from service.fingerprints import keyed_fingerprint
from service.revoked_jobs import cancel_jobs_of_revoked_consent
from service.runtime import Runtime
from service.validation import MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_TEXT_LENGTH, check_text

__all__ = ["decode_photo", "enroll", "evidence_digest", "grant", "revoke"]


def decode_photo(rt: Runtime, content: bytes) -> ReferencePhoto:
    """Decode reference-photo bytes under the configured pixel limit (raises InvalidImage/ImageTooLarge)."""
    return ReferencePhoto(
        image_rgb=load_image(content, max_pixels=rt.settings.max_image_pixels, portrait=True), content=content
    )


def evidence_digest(content: bytes | None, sha256_hex: str | None) -> str:
    """The SHA-256 of the consent evidence: computed from the file, or given directly."""
    if content is not None:
        if not content:
            raise InvalidInput("the consent evidence file is empty", code="invalid_consent")
        return hashlib.sha256(content).hexdigest()
    if sha256_hex:
        return sha256_hex
    raise InvalidInput(
        "consent needs evidence: a file (the signed form, a recording) or its SHA-256", code="invalid_consent"
    )



def _consent_in(
    subject_id: str, purposes: Sequence[str], clients: Sequence[str], expires_days: float, evidence_sha256: str
) -> ConsentCreate:
    for value, field in [
        (subject_id, "subject id"),
        *((p, "purpose") for p in purposes),
        *((c, "client id") for c in clients),
    ]:
        check_text(value, field=field, max_length=MAX_ID_LENGTH, code="invalid_consent")
    if expires_days <= 0:
        raise InvalidInput("consent must expire in the future (expires_days > 0)", code="invalid_consent")
    try:
        return ConsentCreate(
            subject_id=subject_id,
            purposes=list(purposes),
            allowed_clients=list(clients) or [ANY_CLIENT],
            expires_at=datetime.now(UTC) + timedelta(days=expires_days),
            evidence_sha256=evidence_sha256,
        )
    except ValueError as exc:  # pydantic validation of purposes / clients / evidence
        raise InvalidInput(f"invalid consent: {exc}", code="invalid_consent") from exc


def enroll(
    rt: Runtime,
    *,
    name: str,
    photos: Sequence[bytes],
    purposes: Sequence[str],
    clients: Sequence[str],
    expires_days: float,
    evidence_sha256: str,
    actor: str,
    request_id: str | None = None,
    review_justification: str | None = None,
    new_consent_after_erasure: bool = False,
) -> tuple[Subject, ConsentRecord]:
    """Enroll a subject from reference photos and record their consent, in one transaction.

    A photo in the block list's review band is refused (`possible_protected_identity`) unless the enrolling
    consent officer gives `review_justification`; the override is audited with the distance and the entry.

    A photo of an erased subject (the same file) is refused (`subject_erased`) unless the officer confirms a new
    consent with `new_consent_after_erasure`, and that consent's evidence must not be the erased consent's.
    """
    check_text(name, field="the subject's name", max_length=MAX_NAME_LENGTH, code="invalid_consent")
    if not name.strip():
        raise InvalidInput("the subject's name is empty", code="invalid_consent")
    decoded = [decode_photo(rt, p) for p in photos]
    fingerprints = [keyed_fingerprint(rt, p.sha256) for p in decoded]
    hits: list[BandHit] = []
    with rt.session() as session:
        session.expire_on_commit = False
        erased_ids = _check_not_erased(session, fingerprints, evidence_sha256, new_consent_after_erasure)
        subject = enroll_subject(
            session=session,
            subject_in=SubjectCreate(display_name=name, store_photos=rt.settings.store_reference_photos),
            photos=decoded,
            analyzer=rt.analyzer,
            created_by=actor,
            block_threshold=rt.settings.block_match_threshold,
            # Reference photos must agree like a subject and a request photo may: within the subject's band.
            reference_threshold=rt.settings.subject_review_threshold,
            photo_dir=rt.settings.data_dir / "reference-photos" if rt.settings.store_reference_photos else None,
            block_review_threshold=rt.settings.block_review_threshold,
            review_justification=review_justification,
            band_hits=hits,
        )
        record = grant_consent(
            session=session,
            consent_in=_consent_in(subject.id, purposes, clients, expires_days, evidence_sha256),
            granted_by=actor,
        )
        if erased_ids:  # a live enrolment with new consent supersedes the erasure's block of these files
            session.exec(delete(ErasedFingerprint).where(col(ErasedFingerprint.fingerprint).in_(fingerprints)))
        session.commit()
    rt.audit.append(
        action="subject.enrolled",
        actor=actor,
        subject=subject.id,
        outcome="ok",
        request_id=request_id,
        details={"references": len(decoded), "photo_fingerprints": fingerprints},
    )
    if erased_ids:
        rt.audit.append(
            action="subject.reenrolled_after_erasure",
            actor=actor,
            subject=subject.id,
            outcome="ok",
            request_id=request_id,
            details={"erased_subject_ids": erased_ids, "consent_record_id": record.id},
        )
    for hit in hits:
        rt.audit.append(
            action="identity_review.enrollment_override",
            actor=actor,
            subject=subject.id,
            outcome="ok",
            request_id=request_id,
            details={
                "reason": "possible_protected_identity",
                "photo_fingerprint": keyed_fingerprint(rt, hit.photo_sha256),
                "blocked_identity_id": hit.blocked_id,
                "distance": round(hit.distance, 4),
                "justification": review_justification,
            },
        )
    _audit_grant(rt, record, actor, request_id)
    return subject, record


def _check_not_erased(
    session: Session, fingerprints: Sequence[str], evidence_sha256: str, confirmed: bool
) -> list[str]:
    """Refuse photos of an erased subject unless a new consent is confirmed; returns the erased subjects matched."""
    if not fingerprints:
        return []
    rows = session.exec(
        select(ErasedFingerprint).where(col(ErasedFingerprint.fingerprint).in_(list(fingerprints)))
    ).all()
    erased_ids = sorted({r.subject_id for r in rows})
    if not erased_ids:
        return []
    if not confirmed:
        raise SubjectErased(
            "a reference photo is one of an erased subject's; enrolling them again needs a new consent, confirmed "
            "with new_consent_after_erasure"
        )
    old_evidence = session.exec(
        select(ConsentRecord.evidence_sha256).where(col(ConsentRecord.subject_id).in_(erased_ids))
    ).all()
    if evidence_sha256 in set(old_evidence):
        raise InvalidInput(
            "this is the evidence of the consent that was erased; record the new consent's evidence",
            code="stale_consent_evidence",
        )
    return erased_ids


def _refuse_erased(session: Session, subject_id: str) -> Subject:
    subject = get_subject(session=session, subject_id=subject_id)
    if subject.erased_at is not None:
        raise SubjectErased(f"subject {subject_id} was erased; enroll the person again with a new consent")
    return subject


def grant(
    rt: Runtime,
    *,
    subject_id: str,
    purposes: Sequence[str],
    clients: Sequence[str],
    expires_days: float,
    evidence_sha256: str,
    actor: str,
    request_id: str | None = None,
) -> ConsentRecord:
    check_text(subject_id, field="subject id", code="invalid_consent")
    with rt.session() as session:
        session.expire_on_commit = False
        _refuse_erased(session, subject_id)
        record = grant_consent(
            session=session,
            consent_in=_consent_in(subject_id, purposes, clients, expires_days, evidence_sha256),
            granted_by=actor,
        )
        session.commit()
    _audit_grant(rt, record, actor, request_id)
    # The newest record decides which of the subject's videos are served: a renewal serves withdrawn ones again
    # (their withdrawal mark is cleared, so a later one is announced), a narrower grant withdraws the rest.
    output_access.notify_withdrawn(rt, subject_id=subject_id, actor=actor, request_id=request_id)
    return record


def _audit_grant(rt: Runtime, record: ConsentRecord, actor: str, request_id: str | None) -> None:
    rt.audit.append(
        action="consent.granted",
        actor=actor,
        subject=record.subject_id,
        outcome="ok",
        request_id=request_id,
        details={
            "consent_record_id": record.id,
            "purposes": record.purposes,
            "allowed_clients": record.allowed_clients,
            "expires_at": record.expires_at.isoformat(),
            "evidence_sha256": record.evidence_sha256,
        },
    )


def revoke(
    rt: Runtime,
    *,
    subject_id: str,
    reason: str,
    actor: str,
    consent_id: str | None = None,
    request_id: str | None = None,
) -> ConsentRecord:
    """Revoke consent; it takes effect for the very next request (and for jobs still queued)."""
    check_text(subject_id, field="subject id", code="invalid_consent")
    check_text(reason, field="the reason", max_length=MAX_TEXT_LENGTH, code="invalid_consent")
    if consent_id is not None:
        check_text(consent_id, field="consent id", code="invalid_consent")
    with rt.session() as session:
        session.expire_on_commit = False
        record = revoke_consent(
            session=session, subject_id=subject_id, revoked_by=actor, reason=reason, consent_id=consent_id
        )
        session.commit()
    rt.audit.append(
        action="consent.revoked",
        actor=actor,
        subject=subject_id,
        outcome="ok",
        request_id=request_id,
        details={"consent_record_id": record.id, "reason": reason},
    )
    webhooks.consent_revoked(rt, subject_id=subject_id, consent_id=record.id, allowed_clients=record.allowed_clients)
    cancel_jobs_of_revoked_consent(rt, subject_id=subject_id, consent_id=consent_id, actor=actor, request_id=request_id)
    # The subject's finished videos stop being served now (decided per request); their clients are told.
    output_access.notify_withdrawn(rt, subject_id=subject_id, actor=actor, request_id=request_id)
    return record
