"""Everything a reviewer sees about one subject: consent history, reference-photo hashes, and every generation
with the policy decision that admitted (or refused) it, its watermark tag and its C2PA manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from safeguards.consent import ConsentRecord, Subject, SubjectReferencePublic
from safeguards.consent_records import list_consents
from safeguards.subjects import get_subject, list_references
from service.models import Generation, JobStatus
from service.output_access import withheld_reason
from service.runtime import Runtime


@dataclass(frozen=True)
class ConsentRow:
    record: ConsentRecord
    state: str  # active | expired | revoked | superseded (an older unrevoked grant: the newest one governs)


@dataclass(frozen=True)
class GenerationRow:
    generation: Generation
    decision: dict[str, Any] | None  # the policy decision from the audit log (allowed, reasons, policy_version...)
    manifest: Any | None  # the stored C2PA manifest, parsed
    manifest_text: str | None  # the same, pretty-printed
    # Why a succeeded generation's video is not served now (subject_erased, consent_revoked, retention_expired...),
    # decided as the download route decides it; None while it is served or when there was no video.
    withheld: str | None = None


@dataclass(frozen=True)
class SubjectView:
    subject: Subject
    consents: list[ConsentRow]
    references: list[SubjectReferencePublic]  # hashes only: embeddings never reach a page
    generations: list[GenerationRow]


def _consent_rows(records: list[ConsentRecord], now: datetime) -> list[ConsentRow]:
    rows = []
    for i, r in enumerate(records):  # newest grant first
        if r.revoked_at is not None:
            state = "revoked"
        elif r.expires_at <= now:
            state = "expired"
        elif i > 0:
            state = "superseded"
        else:
            state = "active"
        rows.append(ConsentRow(r, state))
    return rows


def _decisions(rt: Runtime, subject_id: str) -> dict[str, dict[str, Any]]:
    """Policy decisions logged for this subject, by generation id."""
    out: dict[str, dict[str, Any]] = {}
    for event in rt.audit.iter_events(subject=subject_id, action="policy.decision"):
        gen_id = event.details.get("generation_id")
        decision = event.details.get("decision")
        if gen_id and isinstance(decision, dict):
            out[str(gen_id)] = {**decision, "audit_seq": event.seq, "ts": event.ts}
    return out


def subject_view(rt: Runtime, subject_id: str, *, with_generations: bool) -> SubjectView:
    """The subject's page data (SubjectNotFound when there is no such subject). Generations, their decisions and
    manifests only `with_generations` (the caller holds audit:read)."""
    with rt.session() as session:
        session.expire_on_commit = False
        subject = get_subject(session=session, subject_id=subject_id)
        consents = _consent_rows(list_consents(session=session, subject_id=subject_id), datetime.now(UTC))
        references = [
            SubjectReferencePublic.from_row(r) for r in list_references(session=session, subject_id=subject_id)
        ]
        gens: list[Generation] = []
        withheld: dict[str, str] = {}
        if with_generations:
            gens = list(
                session.exec(
                    select(Generation)
                    .where(Generation.subject_id == subject_id)
                    .order_by(col(Generation.created_at).desc())
                ).all()
            )
            retention = rt.settings.output_retention_days
            for g in gens:
                reason = None
                if g.status == JobStatus.succeeded:
                    reason = withheld_reason(session, g, retention_days=retention)
                if reason is not None:
                    withheld[g.id] = reason.code
    decisions = _decisions(rt, subject_id) if with_generations else {}
    rows = []
    for g in gens:
        manifest = json.loads(g.manifest_json) if g.manifest_json else None
        rows.append(
            GenerationRow(
                generation=g,
                decision=decisions.get(g.id),
                manifest=manifest,
                manifest_text=json.dumps(manifest, indent=2, sort_keys=True) if manifest is not None else None,
                withheld=withheld.get(g.id),
            )
        )
    return SubjectView(subject, consents, references, rows)
