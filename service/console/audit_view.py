"""What the reviewer's audit pages read: a newest-first, filtered timeline and one entry's place in the chain.

`AuditLog.query` pages oldest-first and has no outcome filter; a reviewer starts from the newest entries and asks
for denials, so this module runs its own read-only query over the `audit_event` table (the log's public model).
Appending and verifying stay with `AuditLog`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from audit import GENESIS_HASH, AuditCheckpoint, AuditEvent, AuditLog, compute_entry_hash, utc_timestamp
from audit import verify_checkpoint_signature as _verify_signature
from audit.errors import AuditError
from audit.evidence import EntryEvidence, entry_evidence
from service.errors import InvalidInput

_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
OUTCOME_CHOICES = ("ok", "denied", "rejected", "error")


@dataclass(frozen=True)
class TimelineFilters:
    """Form values as typed (times are `datetime-local` values, read as UTC); empty strings mean no filter."""

    since: str = ""
    until: str = ""
    actor: str = ""
    subject: str = ""
    action: str = ""
    outcome: str = ""

    def active(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def _utc_bound(value: str, name: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM)", code="invalid_request"
        ) from exc
    return utc_timestamp(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _where(stmt: Any, f: TimelineFilters) -> Any:
    if f.outcome and f.outcome not in OUTCOME_CHOICES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOME_CHOICES)}", code="invalid_request")
    if f.since:
        stmt = stmt.where(_EVENTS.c.ts >= _utc_bound(f.since, "from"))
    if f.until:
        stmt = stmt.where(_EVENTS.c.ts < _utc_bound(f.until, "until"))
    for name in ("actor", "subject", "action", "outcome"):
        value = getattr(f, name).strip()
        if value:
            stmt = stmt.where(_EVENTS.c[name] == value)
    # Rows at seq <= 0 are outside every checkpoint (verify names them): never shown as entries of the log.
    return stmt.where(_EVENTS.c.seq > 0)


@dataclass(frozen=True)
class TimelinePage:
    entries: list[AuditEvent]  # newest first
    older: int | None  # `before` cursor of the next older page
    newer: int | None  # `after` cursor of the next newer page


def timeline_page(
    engine: Engine, f: TimelineFilters, *, before: int | None = None, after: int | None = None, limit: int = 50
) -> TimelinePage:
    """One page of matching entries, newest first: the newest ones, those older than `before`, or those just newer
    than `after`."""
    stmt = _where(select(_EVENTS), f)
    if after is not None:
        stmt = stmt.where(_EVENTS.c.seq > after).order_by(_EVENTS.c.seq.asc())
    else:
        if before is not None:
            stmt = stmt.where(_EVENTS.c.seq < before)
        stmt = stmt.order_by(_EVENTS.c.seq.desc())
    with engine.connect() as conn:
        rows = [AuditEvent(**dict(r)) for r in conn.execute(stmt.limit(limit + 1)).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    if after is not None:
        rows.reverse()
        newer = rows[0].seq if more and rows else None
        older = rows[-1].seq if rows else None
        return TimelinePage(rows, older, newer)
    older = rows[-1].seq if more and rows else None
    newer = rows[0].seq if before is not None and rows else None
    return TimelinePage(rows, older, newer)


def iter_matching(engine: Engine, f: TimelineFilters, *, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every matching entry, oldest first, in batches (the JSONL export)."""
    after = 0
    while True:
        stmt = _where(select(_EVENTS), f).where(_EVENTS.c.seq > after).order_by(_EVENTS.c.seq).limit(batch)
        with engine.connect() as conn:
            rows = [AuditEvent(**dict(r)) for r in conn.execute(stmt).mappings()]
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].seq


@dataclass(frozen=True)
class EntryPlace:
    """An entry and what links it into the log: its own hash, its predecessor, the earliest signed checkpoint that
    covers it with the entry's inclusion proof in that checkpoint's tree (checked), and the current checkpoint."""

    event: AuditEvent
    hash_ok: bool  # the stored entry_hash is the hash of the stored fields
    prev_ok: bool  # prev_hash is the previous entry's entry_hash (genesis for seq 1)
    prev_seq: int | None
    next_seq: int | None
    checkpoint: AuditCheckpoint | None
    checkpoint_covers: bool  # the signed checkpoint's size >= seq
    checkpoint_signature_ok: bool
    checkpoint_problem: str | None
    evidence: EntryEvidence | None  # the earliest covering checkpoint and the inclusion proof, verified
    evidence_problem: str | None  # why there is none (not covered yet, the stored entries do not give the root...)


def entry_place(log: AuditLog, engine: Engine, seq: int) -> EntryPlace | None:
    with engine.connect() as conn:
        row = conn.execute(select(_EVENTS).where(_EVENTS.c.seq == seq)).mappings().first()
        if row is None:
            return None
        prev = conn.execute(select(_EVENTS.c.entry_hash).where(_EVENTS.c.seq == seq - 1)).scalar()
        nxt = conn.execute(select(_EVENTS.c.seq).where(_EVENTS.c.seq == seq + 1)).scalar()
    event = AuditEvent(**dict(row))
    try:
        hash_ok = compute_entry_hash(event.hashed_fields()) == event.entry_hash
    except AuditError:
        hash_ok = False
    expected_prev = GENESIS_HASH if seq == 1 else prev
    checkpoint = log.checkpoint()
    signature_ok, problem = False, None
    if checkpoint is not None:
        try:
            _verify_signature(checkpoint, log.public_key)
            signature_ok = True
        except AuditError as exc:
            problem = str(exc)
    evidence, evidence_problem = None, None
    if checkpoint is not None and checkpoint.size >= seq:  # otherwise the page says no checkpoint covers it yet
        try:
            # Reads the entry hashes up to the covering checkpoint: O(size), as checking one entry offline would.
            evidence = entry_evidence(log, seq)
        except AuditError as exc:
            evidence_problem = str(exc)
    return EntryPlace(
        event=event,
        hash_ok=hash_ok,
        prev_ok=expected_prev is not None and event.prev_hash == expected_prev,
        prev_seq=seq - 1 if prev is not None else None,
        next_seq=nxt,
        checkpoint=checkpoint,
        checkpoint_covers=checkpoint is not None and checkpoint.size >= seq,
        checkpoint_signature_ok=signature_ok,
        checkpoint_problem=problem,
        evidence=evidence,
        evidence_problem=evidence_problem,
    )
