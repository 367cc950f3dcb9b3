"""Consent-registry operations shared by the CLI and the API: each one commits and is audited.

The registry functions in `safeguards.consent` measure and write; this module adds the service's concerns
(settings-driven thresholds, photo decoding under the upload limits, the audit entry, the commit).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, delete, select

from generation.media import load_image
from policies import POLICY_ERROR, REVIEWABLE_CODES, PolicyDecision
from policies.facts import GenerationFacts
from safeguards.blocklist import add_block_references, block_identity, blocked_references, unblock_identity
from safeguards.consent import (
    ANY_CLIENT,
    BlockedIdentity,
    BlockedIdentityCreate,
    ConsentCreate,
    ConsentRecord,
    ErasedFingerprint,
    Subject,
    SubjectCreate,
    SubjectReference,
)
from safeguards.consent_records import grant_consent, revoke_consent
from safeguards.enrollment import BandHit, enroll_subject
from safeguards.errors import ConsentNotFound
from safeguards.identity import Band, IdentityThresholds
from safeguards.reference_photos import ReferencePhoto
from safeguards.reviews import IdentityReview, decide_review, queue_review, record_use
from safeguards.subjects import get_subject
from service import output_access, webhooks
from service.errors import InvalidInput, SubjectErased
from service.keys import derive_key
from service.runtime import Runtime
from service.settings import Settings
from service.validation import MAX_ID_LENGTH, MAX_NAME_LENGTH, MAX_TEXT_LENGTH, check_text

__all__ = [
    "ANY_CLIENT",
    "ErasureReport",
    "add_block_photos",
    "block",
    "decide",
    "decode_photo",
    "enroll",
    "erase_subject",
    "evidence_digest",
    "keyed_fingerprint",
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


def keyed_fingerprint(rt: Runtime, sha256_hex: str) -> str:
    """A keyed one-way fingerprint of a file's SHA-256 (a photo, an audio track): HMAC-SHA256 under a key derived
    from the service secret.

    The audit log names photos by this, never by their plain SHA-256: a plain hash lets anyone holding a photo
    confirm it was used, forever, even after the subject is erased; this one needs the service secret as well. An
    erasure keeps these fingerprints of the reference photos (consent_erased_fingerprint) to stop the same file from
    re-enrolling the person without a new consent. It identifies a file, not a face: a different photo of the same
    person does not match it (a likeness-level block list would itself be biometric data, which erasure must not
    keep)."""
    key = derive_key(rt.settings.keys_dir, "media-fingerprint/v1")
    return hmac.new(key, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()


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


# --- erasure (GDPR Art. 17) ----------------------------------------------------------------------------------


@dataclass
class ErasureReport:
    """What `erase_subject` removed and what it kept (counts and ids: nothing personal)."""

    subject_id: str
    erased_at: datetime
    already_erased: bool = False
    consents_revoked: int = 0
    references_deleted: int = 0
    reference_photos_deleted: int = 0
    reviews_deleted: int = 0
    generations_erased: list[str] = dataclass_field(default_factory=list)
    outputs_deleted: int = 0
    uploads_deleted: int = 0
    # Videos a CLI user wrote to a path of their choosing (`provatar generate -o`): theirs, not deleted here.
    outputs_outside_data_dir: int = 0
    # Jobs that were running: asked to stop; an output one still writes is deleted by the next sweep.
    generations_still_running: list[str] = dataclass_field(default_factory=list)
    fingerprints_kept: int = 0
    audit_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["erased_at"] = self.erased_at.isoformat()
        return data


def _secure_delete(session: Session) -> None:
    """SQLite keeps deleted rows' bytes in free pages until they are reused: have it zero them instead."""
    if session.get_bind().dialect.name == "sqlite":
        session.connection().exec_driver_sql("PRAGMA secure_delete=ON")


def _truncate_sqlite_wal(rt: Runtime) -> None:
    """Old page images (embeddings included) stay in the -wal file until a checkpoint truncates it."""
    if rt.engine.dialect.name != "sqlite":
        return
    with rt.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def erase_subject(rt: Runtime, subject_id: str, *, actor: str, request_id: str | None = None) -> ErasureReport:
    """Erase a subject (GDPR Art. 17): everything of the person goes, the record of what was done stays.

    Deleted: reference embeddings and photo hashes, stored reference photos, the subject's identity reviews (they
    hold photo hashes and distances), the videos and uploads of their generations, and the name. Consent evidence
    files are never stored (only their SHA-256), so there are none to delete.
    Kept: the subject row as a tombstone (`erased_at`), its consent records (revoked now; purposes, dates and the
    evidence hash are the proof of lawful processing before the erasure, Art. 17(3)(b)/(e)), the generation rows
    marked erased with their paths and stored manifest cleared, keyed fingerprints of the reference photos (see
    `keyed_fingerprint`) that stop the same files re-enrolling without a new consent, and the audit log, which
    names photos only by keyed fingerprints and stays intact and verifying.
    Erasing again changes nothing (`already_erased`). On SQLite the freed pages are zeroed and the WAL truncated,
    so the bytes are gone from the database file too; on PostgreSQL run VACUUM to reclaim the dead rows.
    """
    from safeguards.reviews import IdentityReview
    from service.models import FINAL_STATUSES, Generation, JobStatus

    check_text(subject_id, field="subject id", code="invalid_input")
    now = datetime.now(UTC)
    with rt.session() as session:
        session.expire_on_commit = False  # the revoked record is read after the commit
        _secure_delete(session)
        subject = get_subject(session=session, subject_id=subject_id)
        if subject.erased_at is not None:
            return ErasureReport(subject_id=subject_id, erased_at=subject.erased_at, already_erased=True)
        report = ErasureReport(subject_id=subject_id, erased_at=now)
        # First the tombstone and the revocation, committed: from here on no request can use the subject.
        report.consents_revoked = sum(
            r.revoked_at is None
            for r in session.exec(select(ConsentRecord).where(ConsentRecord.subject_id == subject_id))
        )
        try:
            revoked: ConsentRecord | None = revoke_consent(
                session=session, subject_id=subject_id, revoked_by=actor, reason="subject erased", now=now
            )
        except ConsentNotFound:
            revoked = None  # nothing in force: the records are all revoked already
        subject.display_name = "(erased)"
        subject.store_photos = False
        subject.erased_at, subject.erased_by = now, actor
        session.add(subject)
        session.commit()
    if revoked is not None:  # the clients named in the consent, and those that generated with the subject
        webhooks.consent_revoked(
            rt, subject_id=subject_id, consent_id=revoked.id, allowed_clients=revoked.allowed_clients
        )
    cancel_jobs_of_revoked_consent(rt, subject_id=subject_id, consent_id=None, actor=actor, request_id=request_id)

    withdrawn: dict[str, list[str]] = {}
    with rt.session() as session:
        _secure_delete(session)
        references = list(session.exec(select(SubjectReference).where(SubjectReference.subject_id == subject_id)).all())
        known = set(session.exec(select(ErasedFingerprint.fingerprint)).all())
        for fingerprint in sorted({keyed_fingerprint(rt, r.photo_sha256) for r in references} - known):
            session.add(ErasedFingerprint(fingerprint=fingerprint, subject_id=subject_id, erased_at=now))
            report.fingerprints_kept += 1
        photo_dirs = set()
        for ref in references:
            if ref.photo_path:
                photo_dirs.add(Path(ref.photo_path).parent)
                report.reference_photos_deleted += output_access.delete_stored_file(rt, ref.photo_path)
            session.delete(ref)
        report.references_deleted = len(references)
        reviews = list(session.exec(select(IdentityReview).where(IdentityReview.subject_id == subject_id)).all())
        for review in reviews:
            session.delete(review)
        report.reviews_deleted = len(reviews)
        for gen in session.exec(select(Generation).where(Generation.subject_id == subject_id)).all():
            if gen.status not in FINAL_STATUSES:
                report.generations_still_running.append(gen.id)
                continue
            if gen.status == JobStatus.succeeded and gen.output_deleted_at is None:
                withdrawn.setdefault(gen.client_id, []).append(gen.id)
            _erase_generation_files(rt, gen, report)
            gen.output_deleted_at = gen.output_deleted_at or now
            gen.output_deleted_reason = "subject_erased"
            session.add(gen)
            report.generations_erased.append(gen.id)
        session.commit()
    for directory in photo_dirs:
        try:
            directory.rmdir()  # the subject's own folder under reference-photos/, now empty
        except OSError:
            pass
    _truncate_sqlite_wal(rt)
    for client_id, ids in withdrawn.items():
        webhooks.enqueue(
            rt,
            event_type="generation.withdrawn",
            data={
                "generation_ids": ids,
                "reasons": dict.fromkeys(ids, "subject_erased"),
                "withdrawn_at": now.isoformat(),
            },
            client_ids=[client_id],
        )
    details = report.to_dict()
    for key in ("subject_id", "erased_at", "already_erased", "audit_seq"):
        details.pop(key)
    event = rt.audit.append(
        action="subject.erased", actor=actor, subject=subject_id, outcome="ok", request_id=request_id, details=details
    )
    report.audit_seq = event.seq
    return report


def _erase_generation_files(rt: Runtime, gen: Any, report: ErasureReport) -> None:
    """Delete a finished generation's video and staged uploads where they are ours, and clear what pointed at the
    person (input paths, which for the CLI are the user's own file names; the stored manifest with its ingredient
    hashes). A watermarked copy found later still resolves to the generation row, marked erased."""
    if gen.output_path:
        if output_access.delete_stored_file(rt, gen.output_path):
            report.outputs_deleted += 1
        elif not output_access.is_stored(rt, gen.output_path) and Path(gen.output_path).exists():
            report.outputs_outside_data_dir += 1
        gen.output_path = None
    uploads = rt.settings.uploads_dir.resolve()
    for attr in ("photo_path", "audio_path"):
        path = getattr(gen, attr)
        if path:
            report.uploads_deleted += output_access.delete_stored_file(rt, path)
            staging = Path(path).resolve().parent
            if staging.parent == uploads:
                try:
                    staging.rmdir()  # the job's own staging folder, now empty
                except OSError:
                    pass
            setattr(gen, attr, "")
    gen.manifest_json = None


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
                details=_review_details(rt, review),
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
            **_review_details(rt, review),
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
            "photo_fingerprint": keyed_fingerprint(rt, facts.photo_sha256) if facts.photo_sha256 else None,
            "reviews": human_review_summary(facts),
        },
    )


def human_review_summary(facts: GenerationFacts) -> list[dict[str, str]]:
    """Who approved which borderline match for this request (for the audit log and the C2PA manifest)."""
    return [
        {"review_id": rid, "reason": code, "approved_by": who}
        for rid, code, who in zip(facts.review_ids, facts.approved_reviews, facts.reviewed_by, strict=True)
    ]


def _review_details(rt: Runtime, review: IdentityReview) -> dict[str, object]:
    return {
        "review_id": review.id,
        "reason": review.reason,
        "status": review.status,
        "photo_fingerprint": keyed_fingerprint(rt, review.photo_sha256),
        "blocked_identity_id": review.blocked_identity_id,
        "distance": round(review.distance, 4),
        "band": [review.match_threshold, review.review_threshold],
        "quality_issues": list(review.quality_issues),
        "client_id": review.client_id,
        "generation_id": review.generation_id,
    }
