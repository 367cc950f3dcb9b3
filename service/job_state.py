"""Every change of a generation job's status, in one place.

    queued --claim (a lease, service/leases.py)--> running --finish--> succeeded | failed | denied | cancelled
    queued --cancel--> cancelled
    running --lease expired (service/reaper.py) | transient failure--> queued (retry) | failed
    running --cancel--> (cancel_requested_at set; the render stops at its next frame, then -> cancelled)

Each transition is one conditional UPDATE (`WHERE status IN <allowed sources>`, plus the caller's conditions such as
"this runner still holds the lease"), so two workers, a worker and a cancel request, or a runner and the reaper can
never both win. A transition that is audited commits in the same transaction as its audit entry (`move_audited`):
a job is recorded completed (or failed, cancelled, requeued) exactly once, however often its task is delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.engine import Connection
from sqlmodel import col

from audit.models import AuditEvent
from service import webhooks
from service.models import FINAL_STATUSES, Generation, JobStatus
from service.runtime import Runtime

# Which statuses each status may be entered from.
SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running}),  # retried: its lease expired, or a transient failure
    JobStatus.running: frozenset({JobStatus.queued}),  # claimed by a runner (with a lease)
    JobStatus.succeeded: frozenset({JobStatus.running}),
    JobStatus.failed: frozenset({JobStatus.running, JobStatus.queued}),
    JobStatus.denied: frozenset({JobStatus.running}),
    JobStatus.cancelled: frozenset({JobStatus.queued, JobStatus.running}),
}

CANCELLED_FIELDS = {"error_code": "cancelled", "error_message": "cancelled on request"}
# Leaving `running` ends the runner's lease (the last heartbeat time stays, for the record).
_LEASE_ENDED = {"lease_owner": None, "lease_expires_at": None}


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested (checked at frame boundaries)."""

    code = "cancelled"


class LeaseLost(Exception):
    """The runner no longer holds the job's lease (it expired and the reaper moved the job on, or it was finished
    elsewhere): its work is discarded and nothing is recorded for it."""

    code = "lease_lost"


class _NotMoved(Exception):
    """The conditional UPDATE matched no row: rolls back the audit entry that was to record the move."""


def _transition(
    generation_id: str,
    to: JobStatus,
    sources: frozenset[JobStatus] | None,
    conditions: Iterable[ColumnElement[bool]],
    attempts_inc: bool,
    fields: dict[str, Any],
) -> Any:
    allowed = SOURCES[to] & sources if sources is not None else SOURCES[to]
    values: dict[str, Any] = {"status": to, **fields}
    if to != JobStatus.running:
        for name, value in _LEASE_ENDED.items():
            values.setdefault(name, value)
    if attempts_inc:
        values["attempts"] = col(Generation.attempts) + 1
    if to in FINAL_STATUSES:
        values.setdefault("finished_at", datetime.now(UTC))
    return (
        update(Generation)
        .where(col(Generation.id) == generation_id, col(Generation.status).in_(list(allowed)), *conditions)
        .values(**values)
    )


def _moved(rt: Runtime, generation_id: str, to: JobStatus) -> Generation:
    with rt.session() as session:
        gen = session.get(Generation, generation_id)
    assert gen is not None
    if to in FINAL_STATUSES:
        webhooks.generation_finished(rt, gen)  # queued in the database; sent by the API's dispatcher
    return gen


def move(
    rt: Runtime,
    generation_id: str,
    to: JobStatus,
    *,
    sources: frozenset[JobStatus] | None = None,
    conditions: Iterable[ColumnElement[bool]] = (),
    attempts_inc: bool = False,
    **fields: Any,
) -> Generation | None:
    """Move a job to `to` if its status is one `to` may be entered from (narrowed by `sources`) and `conditions`
    hold; returns the updated job, or None when it was in no such state."""
    stmt = _transition(generation_id, to, sources, conditions, attempts_inc, fields)
    with rt.session() as session:
        result = session.execute(stmt)
        session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
    return _moved(rt, generation_id, to)


def move_audited(
    rt: Runtime,
    generation_id: str,
    to: JobStatus,
    *,
    audit: dict[str, Any],
    sources: frozenset[JobStatus] | None = None,
    conditions: Iterable[ColumnElement[bool]] = (),
    publish: Callable[[], None] | None = None,
    **fields: Any,
) -> tuple[Generation, AuditEvent] | None:
    """`move`, and append `audit` (AuditLog.append's arguments) in the same transaction: both or neither. None
    (nothing written) when the job was in no state to move. A job that succeeds gets `audit_seq` = the entry's seq.

    `publish` runs inside the transaction once the move is known to win, e.g. renaming the finished video into
    place: only the runner that records the completion ever replaces the output; if it raises, nothing is recorded.
    """
    stmt = _transition(generation_id, to, sources, conditions, False, fields)

    def apply(conn: Connection, seq: int) -> None:
        move_stmt = stmt.values(audit_seq=seq) if to == JobStatus.succeeded else stmt
        if conn.execute(move_stmt).rowcount != 1:
            raise _NotMoved(generation_id)
        if publish is not None:
            publish()

    try:
        event = rt.audit.append(**audit, within=apply)
    except _NotMoved:
        return None
    return _moved(rt, generation_id, to), event


def request_cancel(rt: Runtime, generation_id: str) -> Generation:
    """Cancel a queued job at once, or flag a running one (it stops at its next frame). Final jobs are unchanged:
    the caller checks the returned status."""
    queued = frozenset({JobStatus.queued})
    if (gen := move(rt, generation_id, JobStatus.cancelled, sources=queued, **CANCELLED_FIELDS)) is not None:
        return gen
    now = datetime.now(UTC)
    with rt.session() as session:
        session.execute(
            update(Generation)
            .where(
                col(Generation.id) == generation_id,
                col(Generation.status) == JobStatus.running,
                col(Generation.cancel_requested_at).is_(None),
            )
            .values(cancel_requested_at=now)
        )
        session.commit()
        gen = session.get(Generation, generation_id)
    assert gen is not None
    return gen


def cancel_requested(rt: Runtime, generation_id: str) -> bool:
    with rt.session() as session:
        gen = session.get(Generation, generation_id)
        return gen is not None and gen.cancel_requested_at is not None
