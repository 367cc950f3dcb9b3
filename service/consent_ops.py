"""Consent-registry operations shared by the CLI and the API: each one commits and is audited.

The registry functions in `safeguards.consent` measure and write; this module adds the service's concerns
(settings-driven thresholds, photo decoding under the upload limits, the audit entry, the commit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from generation.media import load_image
from safeguards.consent import (
    ANY_CLIENT,
    BlockedIdentity,
    BlockedIdentityCreate,
    ConsentCreate,
    ConsentRecord,
    ReferencePhoto,
    Subject,
    SubjectCreate,
    block_identity,
    enroll_subject,
    get_subject,
    grant_consent,
    revoke_consent,
    unblock_identity,
)
from service import webhooks
from service.errors import InvalidInput
from service.runtime import Runtime
from service.validation import MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_TEXT_LENGTH, check_text

__all__ = ["ANY_CLIENT", "decode_photo", "enroll", "grant", "revoke", "block", "unblock", "evidence_digest"]


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
) -> tuple[Subject, ConsentRecord]:
    """Enroll a subject from reference photos and record their consent, in one transaction."""
    check_text(name, field="the subject's name", max_length=MAX_NAME_LENGTH, code="invalid_consent")
    if not name.strip():
        raise InvalidInput("the subject's name is empty", code="invalid_consent")
    decoded = [decode_photo(rt, p) for p in photos]
    with rt.session() as session:
        session.expire_on_commit = False
        subject = enroll_subject(
            session=session,
            subject_in=SubjectCreate(display_name=name, store_photos=rt.settings.store_reference_photos),
            photos=decoded,
            analyzer=rt.analyzer,
            created_by=actor,
            block_threshold=rt.settings.block_match_threshold,
            reference_threshold=rt.settings.subject_match_threshold,
            photo_dir=rt.settings.data_dir / "reference-photos" if rt.settings.store_reference_photos else None,
        )
        record = grant_consent(
            session=session,
            consent_in=_consent_in(subject.id, purposes, clients, expires_days, evidence_sha256),
            granted_by=actor,
        )
        session.commit()
    rt.audit.append(
        action="subject.enrolled",
        actor=actor,
        subject=subject.id,
        outcome="ok",
        request_id=request_id,
        details={"references": len(decoded), "photo_sha256": [p.sha256 for p in decoded]},
    )
    _audit_grant(rt, record, actor, request_id)
    return subject, record


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
        get_subject(session=session, subject_id=subject_id)
        record = grant_consent(
            session=session,
            consent_in=_consent_in(subject_id, purposes, clients, expires_days, evidence_sha256),
            granted_by=actor,
        )
        session.commit()
    _audit_grant(rt, record, actor, request_id)
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
    return record


def cancel_jobs_of_revoked_consent(
    rt: Runtime, *, subject_id: str, consent_id: str | None, actor: str, request_id: str | None = None
) -> list[str]:
    """Stop the subject's unfinished jobs once their consent is gone: queued ones are cancelled at once, running
    ones stop at their next frame (the same cancel hook as DELETE-style cancel requests). With `consent_id` only
    the jobs that were admitted under that record (other records of the subject may still be in force; queued jobs
    are checked against the policy again when they start). Returns the ids of the jobs touched."""
    from service import job_state
    from service.jobs import discard_uploads
    from service.models import Generation, JobStatus

    with rt.session() as session:
        stmt = select(Generation).where(
            Generation.subject_id == subject_id, col(Generation.status).in_([JobStatus.queued, JobStatus.running])
        )
        if consent_id is not None:
            stmt = stmt.where(Generation.consent_record_id == consent_id)
        jobs = list(session.exec(stmt).all())
    touched: list[str] = []
    for job in jobs:
        gen = job_state.request_cancel(rt, job.id)
        if gen.status not in (JobStatus.cancelled, JobStatus.running):
            continue  # it finished in the meantime
        touched.append(gen.id)
        if gen.status == JobStatus.cancelled:
            discard_uploads(rt, gen.id)
        rt.audit.append(
            action="generation.cancelled" if gen.status == JobStatus.cancelled else "generation.cancel_requested",
            actor=actor,
            subject=subject_id,
            outcome="ok",
            request_id=request_id,
            details={"generation_id": gen.id, "was": job.status.value, "reason": "consent_revoked"},
        )
    return touched


def block(
    rt: Runtime, *, photo: bytes, label: str, reason: str, actor: str, request_id: str | None = None
) -> BlockedIdentity:
    """Put the likeness in `photo` on the block list (the photo itself is not kept)."""
    check_text(label, field="the label", max_length=MAX_NAME_LENGTH, code="invalid_input")
    check_text(reason, field="the reason", max_length=MAX_TEXT_LENGTH, code="invalid_input")
    decoded = decode_photo(rt, photo)
    with rt.session() as session:
        session.expire_on_commit = False
        entry = block_identity(
            session=session,
            blocked_in=BlockedIdentityCreate(label=label, reason=reason),
            photo=decoded,
            analyzer=rt.analyzer,
            created_by=actor,
        )
        session.commit()
    rt.audit.append(
        action="blocklist.added",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": entry.id, "label": label, "photo_sha256": decoded.sha256},
    )
    return entry


def unblock(rt: Runtime, *, blocked_id: str, actor: str, request_id: str | None = None) -> BlockedIdentity:
    check_text(blocked_id, field="block-list id", code="invalid_input")
    with rt.session() as session:
        session.expire_on_commit = False
        entry = unblock_identity(session=session, blocked_id=blocked_id, removed_by=actor)
        session.commit()
    rt.audit.append(
        action="blocklist.removed",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": blocked_id, "label": entry.label},
    )
    return entry
