"""The output lifecycle sweep: delete videos past the retention period (PROVATAR_OUTPUT_RETENTION_DAYS), delete what
a job still running at its subject's erasure wrote afterwards, and announce videos withheld because consent expired.

Run by the worker's periodic sweep and by `provatar purge`. Downloads do not wait for it: service/output_access.py
refuses an expired or erased video at request time; this is what removes the files and tells the clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select

from safeguards.consent import Subject
from service import output_access
from service.models import FINAL_STATUSES, Generation, JobStatus
from service.runtime import Runtime

ACTOR = "service:retention"


@dataclass
class PurgeReport:
    """What one sweep did: generation ids by what happened to them."""

    expired: list[str] = field(default_factory=list)
    erased_leftovers: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    files_deleted: int = 0


def purge_outputs(rt: Runtime, *, now: datetime | None = None, actor: str = ACTOR) -> PurgeReport:
    """Delete expired videos and erased subjects' leftovers, mark them (410 with the reason after), audit each, and
    send `generation.withdrawn` for videos whose subject's consent has expired or been revoked."""
    now = now or datetime.now(UTC)
    report = PurgeReport()
    days = rt.settings.output_retention_days
    with rt.session() as session:
        live = select(Generation).where(
            Generation.status == JobStatus.succeeded, col(Generation.output_deleted_at).is_(None)
        )
        expired = (
            list(session.exec(live.where(col(Generation.finished_at) <= now - timedelta(days=days))).all())
            if days is not None
            else []
        )
        erased_subjects = select(Subject.id).where(col(Subject.erased_at).is_not(None))
        leftovers = list(
            session.exec(
                select(Generation).where(
                    col(Generation.subject_id).in_(erased_subjects),
                    col(Generation.status).in_(list(FINAL_STATUSES)),
                    col(Generation.output_deleted_at).is_(None),
                )
            ).all()
        )
    for gen, reason, ids in [
        *((g, "retention_expired", report.expired) for g in expired),
        *((g, "subject_erased", report.erased_leftovers) for g in leftovers if g not in expired),
    ]:
        # Deleting is idempotent; the mark is one conditional UPDATE, so when several processes purge at once (API
        # replicas, in broker mode) exactly one of them records, and audits, each video.
        files = output_access.delete_stored_file(rt, gen.output_path)
        fields: dict[str, object] = {"output_deleted_at": now, "output_deleted_reason": reason}
        if reason == "subject_erased":
            files += sum(output_access.delete_stored_file(rt, p) for p in (gen.photo_path, gen.audio_path))
            fields.update(photo_path="", audio_path="", manifest_json=None, output_path=None)
        with rt.session() as session:
            won = session.execute(
                update(Generation)
                .where(col(Generation.id) == gen.id, col(Generation.output_deleted_at).is_(None))
                .values(**fields)
            )
            session.commit()
        if won.rowcount == 1:  # type: ignore[attr-defined]
            report.files_deleted += files
            ids.append(gen.id)
    for gen_id in report.expired:
        rt.audit.append(
            action="generation.output_expired",
            actor=actor,
            outcome="ok",
            details={"generation_id": gen_id, "retention_days": days},
        )
    if report.erased_leftovers:
        rt.audit.append(
            action="generation.output_erased",
            actor=actor,
            outcome="ok",
            details={"generation_ids": report.erased_leftovers, "reason": "subject_erased"},
        )
    report.withdrawn = output_access.notify_withdrawn(rt, actor=actor, now=now)
    return report
