"""Erasing a subject (GDPR Art. 17): everything of the person goes, the record of what was done stays."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from safeguards.consent import ConsentRecord, ErasedFingerprint, SubjectReference
from safeguards.consent_records import revoke_consent
from safeguards.errors import ConsentNotFound
from safeguards.subjects import get_subject
from service import output_access, webhooks
from service.fingerprints import keyed_fingerprint
from service.revoked_jobs import cancel_jobs_of_revoked_consent
from service.runtime import Runtime
from service.validation import check_text

__all__ = ["ErasureReport", "erase_subject"]


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
