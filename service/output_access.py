"""Whether a generation's video may still be served, decided at request time from the records, and what happens when
it may not: the owning client is told (webhook `generation.withdrawn`) and the file is deleted where it is ours.

A video is withheld (410 Gone) when it was deleted (`output_deleted`), its subject was erased (`subject_erased`), it
is older than the retention period (`retention_expired`), or the subject's consent is no longer in force
(`consent_revoked`, `consent_expired`, `no_consent`), or no longer covers the video's purpose or client
(`consent_wrong_purpose`, `consent_wrong_client`). Consent is judged on the records at the moment of the request, as
for a new generation (the newest record wins), so an expiry needs no job to take effect, and a renewal that covers
the video serves it again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from safeguards.consent import ANY_CLIENT, Subject
from safeguards.consent_records import consent_status
from service import webhooks
from service.models import Generation, JobStatus
from service.runtime import Runtime

log = logging.getLogger("provatar.outputs")

# Codes of a withheld video, and whether consent (not a deletion) is why: those can come back with a new grant.
CONSENT_CODES = frozenset(
    {"consent_revoked", "consent_expired", "no_consent", "consent_wrong_purpose", "consent_wrong_client"}
)
_DELETED_CODES = {
    "deleted": "output_deleted",
    "subject_erased": "subject_erased",
    "retention_expired": "retention_expired",
}


@dataclass(frozen=True)
class Withheld:
    """Why a generation's video is not served: a problem code and a sentence for the caller."""

    code: str
    message: str


def _aware(value: datetime) -> datetime:
    """Job timestamps read back naive from SQLite; they are UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def withheld_reason(
    session: Session, gen: Generation, *, now: datetime | None = None, retention_days: float | None = None
) -> Withheld | None:
    """Why the video of a succeeded generation must not be served now; None when it may be."""
    now = now or datetime.now(UTC)
    if gen.output_deleted_at is not None:
        code = _DELETED_CODES.get(gen.output_deleted_reason or "deleted", "output_deleted")
        return Withheld(code, f"the video of generation {gen.id} was deleted ({code.replace('_', ' ')})")
    if retention_days is not None and gen.finished_at is not None:
        if _aware(gen.finished_at) <= now - timedelta(days=retention_days):
            return Withheld(
                "retention_expired", f"the video of generation {gen.id} is past the {retention_days:g}-day retention"
            )
    subject = session.get(Subject, gen.subject_id)
    if subject is not None and subject.erased_at is not None:
        return Withheld("subject_erased", f"the subject of generation {gen.id} was erased")
    # The consent in force now (the newest record, as for a new request) must still cover this video: its purpose
    # and its client. A renewal that covers them serves the video again; a narrower one does not.
    state, record = consent_status(session=session, subject_id=gen.subject_id, at=now)
    if state != "active" or record is None:
        code = {"revoked": "consent_revoked", "expired": "consent_expired"}.get(state, "no_consent")
        return Withheld(code, f"the subject's consent is no longer in force ({state}); the video is not served")
    if gen.purpose not in record.purposes:
        return Withheld("consent_wrong_purpose", f"the subject's consent no longer covers the purpose {gen.purpose!r}")
    if ANY_CLIENT not in record.allowed_clients and gen.client_id not in record.allowed_clients:
        return Withheld("consent_wrong_client", "the subject's consent no longer covers the client that made it")
    return None


def is_stored(rt: Runtime, path: str) -> bool:
    """Whether `path` was stored by this installation (an object of its storage, local or S3, or a file inside the
    data dir such as a reference photo), as opposed to a path a CLI user chose."""
    if rt.storage.key_of(path) is not None:
        return True
    if "://" in path:
        return False
    try:
        Path(path).resolve().relative_to(rt.settings.data_dir.resolve())
    except ValueError:
        return False
    return True


def delete_stored_file(rt: Runtime, path: str | None) -> bool:
    """Delete a file or object this installation stored (service/storage.py, or inside the data dir); paths outside
    it belong to whoever chose them (a CLI user's `-o out.mp4`) and are left alone. True when something was removed."""
    if not path or not is_stored(rt, path):
        return False
    key = rt.storage.key_of(path)
    if key is not None:
        existed = rt.storage.exists(key)
        rt.storage.delete(key)
        return existed
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


def notify_withdrawn(
    rt: Runtime,
    *,
    subject_id: str | None = None,
    actor: str = "service:outputs",
    request_id: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Tell each client whose succeeded videos are now withheld for want of consent (webhook `generation.withdrawn`
    with its own generation ids only), once per withdrawal, and audit it; clear the mark of videos served again.
    One subject's generations, or all of them (the worker's sweep, which is how an expiry gets announced).
    Returns the ids newly withdrawn."""
    now = now or datetime.now(UTC)
    withdrawn: dict[str, list[str]] = defaultdict(list)
    codes: dict[str, str] = {}
    with rt.session() as session:
        stmt = select(Generation).where(
            Generation.status == JobStatus.succeeded, col(Generation.output_deleted_at).is_(None)
        )
        if subject_id is not None:
            stmt = stmt.where(Generation.subject_id == subject_id)
        for gen in session.exec(stmt).all():
            reason = withheld_reason(session, gen, now=now)
            if reason is not None and reason.code in CONSENT_CODES and gen.withdrawn_at is None:
                gen.withdrawn_at = now
                withdrawn[gen.client_id].append(gen.id)
                codes[gen.id] = reason.code
            elif reason is None and gen.withdrawn_at is not None:
                gen.withdrawn_at = None  # consent in force again: a later withdrawal is announced again
            else:
                continue
            session.add(gen)
        session.commit()
    for client_id, ids in withdrawn.items():
        webhooks.enqueue(
            rt,
            event_type="generation.withdrawn",
            data={"generation_ids": ids, "reasons": {i: codes[i] for i in ids}, "withdrawn_at": now.isoformat()},
            client_ids=[client_id],
        )
    ids = [i for group in withdrawn.values() for i in group]
    if ids:
        rt.audit.append(
            action="generation.withdrawn",
            actor=actor,
            subject=subject_id,
            outcome="ok",
            request_id=request_id,
            details={"generation_ids": ids, "reasons": sorted(set(codes.values()))},
        )
    return ids
