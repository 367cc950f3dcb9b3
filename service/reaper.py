"""The reaper: what happens to jobs whose runner is gone, run periodically by every worker process and the API.

- A running job whose lease expired (its runner stopped renewing: killed, crashed, partitioned) is requeued for
  another attempt while it has attempts left (`job_max_attempts`), else failed visibly with `lease_expired` and a
  reason. Jobs owned by their process (a CLI `generate`, a live stream) are failed at once: no one else may finish
  them (issue 14). A job whose cancel was requested is cancelled. Only expired leases are touched, so a job alive in
  another process or on another machine is never taken over, and a replica that restarts changes nothing.
- A queued job no runner claimed for `job_resend_after_seconds` is sent to the broker again (`enqueue`): a
  submission whose enqueue failed (broker down) or whose message was lost is not lost. A duplicate message is
  harmless: a job is claimed once (leases.claim), the other deliveries find it taken and do nothing.

Every move is conditional (the lease must still be expired when the UPDATE runs) and audited in the same
transaction, so several reapers racing record each outcome once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, or_, update
from sqlmodel import col, select

from service import job_state
from service.models import Generation, JobStatus
from service.runtime import Runtime

log = logging.getLogger("provatar.reaper")
Enqueue = Callable[[str], None]
ACTOR = "service:reaper"


def _expired(now: datetime) -> ColumnElement[bool]:
    # A running row without a lease predates leases (0005) or was moved by hand: nobody can be renewing it.
    return or_(col(Generation.lease_expires_at) < now, col(Generation.lease_expires_at).is_(None))


def _verdict(rt: Runtime, gen: Generation) -> tuple[JobStatus, dict[str, Any], str]:
    """Where a job with an expired lease goes: (status, fields, why)."""
    if gen.cancel_requested_at is not None:
        return JobStatus.cancelled, dict(job_state.CANCELLED_FIELDS), "cancel requested; its runner stopped"
    if gen.params.get("live"):
        why = "the process serving the live stream stopped; a live stream cannot be resumed"
        return JobStatus.failed, {"error_code": "lease_expired", "error_message": why}, why
    if gen.params.get("in_process"):
        why = "the process that ran it (provatar generate) stopped; its output was not written"
        return JobStatus.failed, {"error_code": "lease_expired", "error_message": why}, why
    if gen.attempts < rt.settings.job_max_attempts:
        return JobStatus.queued, {}, f"its runner stopped renewing the lease (attempt {gen.attempts}); retried"
    why = (
        f"its runner stopped renewing the lease on each of {gen.attempts} attempts "
        f"(limit PROVATAR_JOB_MAX_ATTEMPTS={rt.settings.job_max_attempts}); not retried again"
    )
    return JobStatus.failed, {"error_code": "lease_expired", "error_message": why}, why


def reap_expired_leases(rt: Runtime, *, enqueue: Enqueue | None = None, now: datetime | None = None) -> list[str]:
    """Requeue, fail or cancel running jobs whose lease expired; returns their ids. Requeued jobs are handed to
    `enqueue` (the broker); without one (the in-process worker) they are picked up from the database."""
    now = now or datetime.now(UTC)
    with rt.session() as session:
        expired = session.exec(
            select(Generation).where(col(Generation.status) == JobStatus.running, _expired(now))
        ).all()
    touched: list[str] = []
    for gen in expired:
        to, fields, why = _verdict(rt, gen)
        action = "generation.requeued" if to == JobStatus.queued else f"generation.{to.value}"
        moved = job_state.move_audited(
            rt,
            gen.id,
            to,
            sources=frozenset({JobStatus.running}),
            conditions=[_expired(now)],  # re-checked in the UPDATE: a lease renewed meanwhile wins
            audit={
                "action": action,
                "actor": ACTOR,
                "subject": gen.subject_id,
                "outcome": "ok" if to == JobStatus.cancelled else "error",
                "request_id": gen.request_id,
                "details": {
                    "generation_id": gen.id,
                    "reason": "lease_expired",
                    "message": why,
                    "attempts": gen.attempts,
                    "lease_owner": gen.lease_owner,
                    "heartbeat_at": gen.heartbeat_at.isoformat() if gen.heartbeat_at else None,
                },
            },
            **fields,
        )
        if moved is None:
            continue
        touched.append(gen.id)
        log.warning("generation %s: lease of %s expired -> %s", gen.id, gen.lease_owner, to.value)
        if gen.params.get("in_process") and gen.output_path and "://" not in gen.output_path:
            # A dead `provatar generate`: its temp files lie beside the user's -o path, where no sweep looks.
            from service.sweep import discard_run_leftovers

            discard_run_leftovers(Path(gen.output_path))
        if to == JobStatus.queued and enqueue is not None:
            _send(rt, gen.id, enqueue, now)
    return touched


def resend_unclaimed(rt: Runtime, *, enqueue: Enqueue, now: datetime | None = None) -> list[str]:
    """Send queued jobs that no runner claimed for `job_resend_after_seconds` to the broker again; returns their
    ids. Jobs reserved for their own process (a CLI run) are not sent: their process runs them or they fail."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=rt.settings.job_resend_after_seconds)
    last_sent = func.coalesce(col(Generation.enqueued_at), col(Generation.created_at))
    with rt.session() as session:
        stale = session.exec(
            select(Generation.id).where(
                col(Generation.status) == JobStatus.queued,
                col(Generation.lease_owner).is_(None),
                last_sent < cutoff,
            )
        ).all()
    return [gen_id for gen_id in stale if _send(rt, gen_id, enqueue, now, cutoff=cutoff)]


def _send(rt: Runtime, gen_id: str, enqueue: Enqueue, now: datetime, *, cutoff: datetime | None = None) -> bool:
    """Stamp `enqueued_at` (once per cutoff window, so racing reapers send once) and hand the job to the broker."""
    stmt = update(Generation).where(col(Generation.id) == gen_id, col(Generation.status) == JobStatus.queued)
    if cutoff is not None:
        last_sent = func.coalesce(col(Generation.enqueued_at), col(Generation.created_at))
        stmt = stmt.where(last_sent < cutoff)
    with rt.session() as session:
        stamped = session.execute(stmt.values(enqueued_at=now)).rowcount == 1  # type: ignore[attr-defined]
        session.commit()
    if not stamped:
        return False
    try:
        enqueue(gen_id)
    except Exception:  # the broker is down: the job stays queued, and the next pass after the cutoff tries again
        log.warning("could not send generation %s to the broker; will retry", gen_id, exc_info=True)
        return False
    return True


class Reaper:
    """Runs `reap_expired_leases` (and, with a broker, `resend_unclaimed`) every `job_reaper_interval_seconds` on a
    daemon thread. A pass that fails (database down) is logged and retried at the next one.

    In broker mode nothing else does the housekeeping the in-process Worker does, so every `sweep_interval_seconds`
    it also sweeps leftovers of killed runs (`sweep`: temp files, fetched inputs, stale staged uploads and outputs;
    service/sweep.py) and, where `purge` is set (the API processes), purges outputs past retention or of erased
    subjects and announces withdrawn ones (service/retention.py; its marks are conditional, so replicas may race)."""

    def __init__(
        self, rt: Runtime, *, enqueue: Enqueue | None = None, sweep: bool = False, purge: bool = False
    ) -> None:
        self.rt, self.enqueue = rt, enqueue
        self.sweep, self.purge = sweep, purge
        self._next_housekeeping = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="provatar-reaper", daemon=True)

    def run_once(self) -> list[str]:
        touched = reap_expired_leases(self.rt, enqueue=self.enqueue)
        if self.enqueue is not None:
            touched += resend_unclaimed(self.rt, enqueue=self.enqueue)
        return touched

    def housekeeping(self) -> None:
        from service.retention import purge_outputs
        from service.sweep import sweep_stale_files

        if self.sweep:
            sweep_stale_files(self.rt)
        if self.purge:
            purge_outputs(self.rt)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.warning("reaper pass failed", exc_info=True)
            if (self.sweep or self.purge) and time.monotonic() >= self._next_housekeeping:
                self._next_housekeeping = time.monotonic() + self.rt.settings.sweep_interval_seconds
                try:
                    self.housekeeping()
                except Exception:
                    log.warning("sweeping or purging failed", exc_info=True)
            if self._stop.wait(self.rt.settings.job_reaper_interval_seconds):
                return
