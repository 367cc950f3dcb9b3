"""Consent records: grant, revoke, list, and the state of a subject's consent at a given time.

The newest record wins. Data functions take keyword-only arguments and a `session`; none of them commits (the caller
owns the transaction and audits the change in the same unit of work).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from policies.facts import ConsentState
from safeguards.consent import ConsentCreate, ConsentRecord
from safeguards.db_types import as_utc, utc_now
from safeguards.errors import ConsentNotFound, InvalidConsentRequest
from safeguards.subjects import get_subject

__all__ = ["consent_status", "grant_consent", "list_consents", "revoke_consent"]


def grant_consent(
    *, session: Session, consent_in: ConsentCreate, granted_by: str, now: datetime | None = None
) -> ConsentRecord:
    """Record a subject's consent. It supersedes earlier records (the newest record wins). Flushes, no commit.

    Raises:
        SubjectNotFound: the subject is not enrolled.
        InvalidConsentRequest: the expiry is not after the grant time.
    """
    get_subject(session=session, subject_id=consent_in.subject_id)
    granted_at = utc_now(now)
    if as_utc(consent_in.expires_at) <= granted_at:
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
    at = utc_now(now)
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
    when = as_utc(at)
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
