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
from policies import POLICY_ERROR, REVIEWABLE_CODES, PolicyDecision
from policies.facts import GenerationFacts
from safeguards.consent import (
    ANY_CLIENT,
    BandHit,
    BlockedIdentity,
    BlockedIdentityCreate,
    ConsentCreate,
    ConsentRecord,
    ReferencePhoto,
    Subject,
    SubjectCreate,
    add_block_references,
    block_identity,
    blocked_references,
    enroll_subject,
    get_subject,
    grant_consent,
    revoke_consent,
    unblock_identity,
)
from safeguards.identity import Band, IdentityThresholds
from safeguards.reviews import IdentityReview, decide_review, queue_review, record_use
from service import webhooks
from service.errors import InvalidInput
from service.runtime import Runtime
from service.settings import Settings
from service.validation import MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_TEXT_LENGTH, check_text

__all__ = [
    "ANY_CLIENT",
    "add_block_photos",
    "block",
    "decide",
    "decode_photo",
    "enroll",
    "evidence_digest",
    "grant",
    "identity_thresholds",
    "queue_identity_reviews",
    "record_review_use",
    "revoke",
    "unblock",
]

# A denial with any of these is final: no human review can change it, so none is queued.
_FINAL_CODES = {"no_face", "multiple_faces", "blocked_identity", "unknown_subject", "subject_mismatch", POLICY_ERROR}


def identity_thresholds(settings: Settings) -> IdentityThresholds:
    """The subject and block-list bands from the settings (a band whose ends are swapped is a startup error)."""
    return IdentityThresholds(
        subject=Band(settings.subject_match_threshold, settings.subject_review_threshold),
        block=Band(settings.block_match_threshold, settings.block_review_threshold),
        poor_photo_margin=settings.poor_photo_margin,
    )


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
) -> tuple[Subject, ConsentRecord]:
    """Enroll a subject from reference photos and record their consent, in one transaction.

    A photo in the block list's review band is refused (`possible_protected_identity`) unless the enrolling
    consent officer gives `review_justification`; the override is audited with the distance and the entry.
    """
    check_text(name, field="the subject's name", max_length=MAX_NAME_LENGTH, code="invalid_consent")
    if not name.strip():
        raise InvalidInput("the subject's name is empty", code="invalid_consent")
    decoded = [decode_photo(rt, p) for p in photos]
    hits: list[BandHit] = []
    with rt.session() as session:
        session.expire_on_commit = False
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
        session.commit()
    rt.audit.append(
        action="subject.enrolled",
        actor=actor,
        subject=subject.id,
        outcome="ok",
        request_id=request_id,
        details={"references": len(decoded), "photo_sha256": [p.sha256 for p in decoded]},
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
                "photo_sha256": hit.photo_sha256,
                "blocked_identity_id": hit.blocked_id,
                "distance": round(hit.distance, 4),
                "justification": review_justification,
            },
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
    rt: Runtime,
    *,
    photos: Sequence[bytes],
    label: str,
    reason: str,
    actor: str,
    request_id: str | None = None,
) -> BlockedIdentity:
    """Put the likeness in `photos` (one or more photos of ONE person) on the block list; photos are not kept."""
    check_text(label, field="the label", max_length=MAX_NAME_LENGTH, code="invalid_input")
    check_text(reason, field="the reason", max_length=MAX_TEXT_LENGTH, code="invalid_input")
    decoded = [decode_photo(rt, p) for p in photos]
    with rt.session() as session:
        session.expire_on_commit = False
        entry = block_identity(
            session=session,
            blocked_in=BlockedIdentityCreate(label=label, reason=reason),
            photos=decoded,
            analyzer=rt.analyzer,
            created_by=actor,
        )
        session.commit()
    rt.audit.append(
        action="blocklist.added",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": entry.id, "label": label, "photo_sha256": [p.sha256 for p in decoded]},
    )
    return entry


def add_block_photos(
    rt: Runtime, *, blocked_id: str, photos: Sequence[bytes], actor: str, request_id: str | None = None
) -> int:
    """Add photos of the same person to a block-list entry; returns how many references it has now."""
    decoded = [decode_photo(rt, p) for p in photos]
    with rt.session() as session:
        add_block_references(session=session, blocked_id=blocked_id, photos=decoded, analyzer=rt.analyzer)
        total = len(blocked_references(session=session, blocked_ids=[blocked_id]))
        session.commit()
    rt.audit.append(
        action="blocklist.photos_added",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": blocked_id, "photo_sha256": [p.sha256 for p in decoded], "references": total},
    )
    return total


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


# --- identity reviews ----------------------------------------------------------------------------------------


def queue_identity_reviews(
    rt: Runtime,
    *,
    facts: GenerationFacts,
    decision: PolicyDecision,
    actor: str,
    request_id: str | None,
    generation_id: str | None = None,
) -> list[IdentityReview]:
    """Queue the borderline likeness of a denied request for a consent officer; [] when nothing is reviewable.

    Only a denial whose identity reasons are all review codes is queued (a certain match, a missing subject or a
    bad face count cannot be approved), and only with the photo's hash to bind an approval to. A pending review of
    the same photo is reused. Each new review is audited.
    """
    codes = [c for c in decision.reasons if c in REVIEWABLE_CODES]
    if not codes or _FINAL_CODES.intersection(decision.reasons) or not facts.photo_sha256:
        return []
    queued: list[tuple[IdentityReview, bool]] = []
    with rt.session() as session:
        session.expire_on_commit = False
        for code in codes:
            block = code == "possible_protected_identity"
            distance = facts.blocked_distance if block else facts.subject_distance
            if distance is None:
                continue
            queued.append(
                queue_review(
                    session=session,
                    reason=code,
                    photo_sha256=facts.photo_sha256,
                    subject_id=facts.subject_id,
                    blocked_identity_id=facts.blocked_identity_id if block else None,
                    distance=distance,
                    match_threshold=facts.block_match_threshold if block else facts.subject_match_threshold,
                    review_threshold=float(
                        (facts.block_review_threshold if block else facts.subject_review_threshold) or distance
                    ),
                    quality_issues=facts.face_quality_issues,
                    client_id=facts.client_id,
                    requested_by=actor,
                    request_id=request_id,
                    generation_id=generation_id,
                    decision_id=decision.decision_id,
                )
            )
        session.commit()
    for review, created in queued:
        if created:
            rt.audit.append(
                action="identity_review.queued",
                actor=actor,
                subject=review.subject_id,
                outcome="ok",
                request_id=request_id,
                details=_review_details(review),
            )
    return [review for review, _ in queued]


def decide(
    rt: Runtime,
    *,
    review_id: str,
    approve: bool,
    justification: str,
    actor: str,
    request_id: str | None = None,
) -> IdentityReview:
    """A consent officer approves or rejects a review with a justification (final, audited)."""
    with rt.session() as session:
        session.expire_on_commit = False
        review = decide_review(
            session=session,
            review_id=review_id,
            approve=approve,
            decided_by=actor,
            justification=justification,
            valid_for=timedelta(days=rt.settings.review_approval_days),
        )
        session.commit()
    rt.audit.append(
        action="identity_review.approved" if approve else "identity_review.rejected",
        actor=actor,
        subject=review.subject_id,
        outcome="ok",
        request_id=request_id,
        details={
            **_review_details(review),
            "justification": review.justification,
            "expires_at": review.expires_at.isoformat() if review.expires_at else None,
        },
    )
    return review


def record_review_use(
    rt: Runtime, *, facts: GenerationFacts, actor: str, request_id: str | None, generation_id: str | None
) -> None:
    """Count and audit the approvals an allowed request relied on (who approved what, for which photo)."""
    if not facts.review_ids:
        return
    with rt.session() as session:
        record_use(session=session, review_ids=list(facts.review_ids))
        session.commit()
    rt.audit.append(
        action="identity_review.used",
        actor=actor,
        subject=facts.subject_id,
        outcome="ok",
        request_id=request_id,
        details={
            "generation_id": generation_id,
            "photo_sha256": facts.photo_sha256,
            "reviews": human_review_summary(facts),
        },
    )


def human_review_summary(facts: GenerationFacts) -> list[dict[str, str]]:
    """Who approved which borderline match for this request (for the audit log and the C2PA manifest)."""
    return [
        {"review_id": rid, "reason": code, "approved_by": who}
        for rid, code, who in zip(facts.review_ids, facts.approved_reviews, facts.reviewed_by, strict=True)
    ]


def _review_details(review: IdentityReview) -> dict[str, object]:
    return {
        "review_id": review.id,
        "reason": review.reason,
        "status": review.status,
        "photo_sha256": review.photo_sha256,
        "blocked_identity_id": review.blocked_identity_id,
        "distance": round(review.distance, 4),
        "band": [review.match_threshold, review.review_threshold],
        "quality_issues": list(review.quality_issues),
        "client_id": review.client_id,
        "generation_id": review.generation_id,
    }
