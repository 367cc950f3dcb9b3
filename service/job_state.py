"""Every change of a generation job's status, in one place.

    queued --claim--> running --finish--> succeeded | failed | denied | cancelled
    queued --cancel--> cancelled            running --recover--> queued (retry) | failed
    running --cancel--> (cancel_requested_at set; the render stops at its next frame, then -> cancelled)

Each transition is one conditional UPDATE (`WHERE status IN <allowed sources>`), so two workers, or a worker and
a cancel request, can never both win. A job queue with leases (issue 10) replaces the callers, not these rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from service import webhooks
from service.models import FINAL_STATUSES, Generation, JobStatus
from service.runtime import Runtime

# Which statuses each status may be entered from.
SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running}),  # recovery after a crash
    JobStatus.running: frozenset({JobStatus.queued, JobStatus.running}),  # claimed, or (re)started by its runner
    JobStatus.succeeded: frozenset({JobStatus.running}),
    JobStatus.failed: frozenset({JobStatus.running, JobStatus.queued}),
    JobStatus.denied: frozenset({JobStatus.running}),
    JobStatus.cancelled: frozenset({JobStatus.queued, JobStatus.running}),
}

CANCELLED_FIELDS = {"error_code": "cancelled", "error_message": "cancelled on request"}


class JobCancelled(Exception):
    """Raised inside a running job when its cancellation was requested (checked at frame boundaries)."""

    code = "cancelled"


def move(
    rt: Runtime,
    generation_id: str,
    to: JobStatus,
    *,
    sources: frozenset[JobStatus] | None = None,
    attempts_inc: bool = False,
    **fields: Any,
) -> Generation | None:
    """Move a job to `to` if its status is one `to` may be entered from (narrowed by `sources`); returns the
    updated job, or None when it was in no such status."""
    allowed = SOURCES[to] & sources if sources is not None else SOURCES[to]
    values: dict[str, Any] = {"status": to, **fields}
    if attempts_inc:
        values["attempts"] = col(Generation.attempts) + 1
    if to in FINAL_STATUSES:
        values.setdefault("finished_at", datetime.now(UTC))
    with rt.session() as session:
        result = session.execute(
            update(Generation)
            .where(col(Generation.id) == generation_id, col(Generation.status).in_(list(allowed)))
            .values(**values)
        )
        session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        gen = session.get(Generation, generation_id)
    assert gen is not None
    if to in FINAL_STATUSES:
        webhooks.generation_finished(rt, gen)  # queued in the database; sent by the API's dispatcher
    return gen


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
