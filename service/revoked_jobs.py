"""Stop a subject's unfinished jobs once their consent is revoked (or the subject erased)."""

from __future__ import annotations

from sqlmodel import col, select

from service.runtime import Runtime

__all__ = ["cancel_jobs_of_revoked_consent"]


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
