"""How a run that failed ends: requeued for a retry when the failure is transient, else recorded as failed (or
denied) with an audit entry, whatever else is broken. Only while the runner holds the job's lease."""

from __future__ import annotations

import logging
from typing import Any

from service import job_state
from service.errors import Denied, describe, unavailable_code
from service.models import Generation, JobStatus
from service.runtime import Runtime

__all__ = ["is_transient", "record_failure", "requeue_transient"]

log = logging.getLogger("provatar.pipeline")  # the pipeline's log: these lines are part of its run


def is_transient(exc: BaseException) -> bool:
    """The database was unreachable: the same job may well succeed in a moment (unlike bad input or a denial)."""
    return unavailable_code(exc) == "database_unavailable"


def requeue_transient(rt: Runtime, gen: Generation, exc: BaseException, *, owned: list[Any]) -> bool:
    """Put a job that hit a transient failure back in the queue for a retry, while it has attempts left. False when
    it has none (the caller fails it) ; a requeue that itself fails leaves the lease to expire (the reaper retries)."""
    if gen.attempts >= rt.settings.job_max_attempts:
        return False
    problem = describe(exc)
    log.warning("generation %s: %s (attempt %d); requeued for a retry", gen.id, problem.message, gen.attempts)
    try:
        job_state.move_audited(
            rt,
            gen.id,
            JobStatus.queued,
            conditions=owned,
            audit={
                "action": "generation.requeued",
                "actor": "service:worker",
                "subject": gen.subject_id,
                "outcome": "error",
                "request_id": gen.request_id,
                "details": {"generation_id": gen.id, "reason": problem.code, "attempts": gen.attempts},
            },
        )
    except Exception:
        log.warning("could not requeue generation %s; its lease will expire", gen.id, exc_info=True)
    return True


def record_failure(rt: Runtime, gen: Generation, exc: BaseException, *, actor: str, owned: list[Any]) -> None:
    """End a running job visibly (status, audit entry, log) whatever else is broken: if the audit log cannot be
    written (database down, disk full) the job is still moved to its final status. Only while this runner holds
    the lease: a job it lost is someone else's."""
    problem = describe(exc)
    denied = isinstance(exc, Denied)
    to = JobStatus.denied if denied else JobStatus.failed
    fields = {"error_code": problem.code, "error_message": problem.message}
    if denied:  # denials were audited as policy decisions already
        _move_quietly(rt, gen.id, to, owned, fields)
        return
    # Bad input is the client's mistake (the job says why); anything else is ours to investigate.
    bug = problem.http_status >= 500
    log.log(
        logging.WARNING if bug else logging.INFO,
        "generation %s failed: %s: %s",
        gen.id,
        problem.code,
        problem.message,
        exc_info=exc if bug else None,
    )
    try:
        job_state.move_audited(
            rt,
            gen.id,
            to,
            conditions=owned,
            audit={
                "action": "generation.failed",
                "actor": actor,
                "subject": gen.subject_id,
                "outcome": "error",
                "request_id": gen.request_id,
                "details": {"generation_id": gen.id, "code": problem.code, "message": problem.message},
            },
            **fields,
        )
    except Exception:
        log.error("could not audit the failure of generation %s", gen.id, exc_info=True)
        _move_quietly(rt, gen.id, to, owned, fields)


def _move_quietly(rt: Runtime, gen_id: str, to: JobStatus, owned: list[Any], fields: dict[str, Any]) -> None:
    try:
        job_state.move(rt, gen_id, to, conditions=owned, **fields)
    except Exception:
        log.error("could not mark generation %s as %s", gen_id, to.value, exc_info=True)
