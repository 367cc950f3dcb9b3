"""Running generation jobs: `run_job` (one job, as every runner does it) and the API's in-process Worker.

Jobs live in the database (service_generation), not in memory, so a restart never loses one. A runner claims a job
under a lease (service/leases.py); the reaper (service/reaper.py) retries or fails jobs whose runner died. With
PROVATAR_BROKER_URL set, Celery workers (service/tasks.py) run jobs instead of this in-process Worker.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import StrEnum

from sqlmodel import col, select

from service import job_state, leases
from service.models import Generation, JobStatus
from service.pipeline import run_claimed
from service.reaper import reap_expired_leases
from service.retention import purge_outputs
from service.run_failures import is_transient
from service.runtime import Runtime
from service.sweep import sweep_stale_files

log = logging.getLogger("provatar.jobs")


class JobOutcome(StrEnum):
    finished = "finished"  # ran to a final status (succeeded, failed, denied, cancelled)
    skipped = "skipped"  # not runnable: finished already, cancelled, or running under another runner's lease
    lease_lost = "lease_lost"  # its lease lapsed mid-run; the job is someone else's now
    retry = "retry"  # a transient failure (database unreachable): try again later


class CancelCheck:
    """`should_stop` for a running job: asks the database at most every `interval` seconds (frames come at
    50+ per second; a cancel needs to land within a fraction of a second, not within one frame). Works across
    processes: the cancel request is a column, set by whichever API replica received it."""

    def __init__(self, rt: Runtime, generation_id: str, interval: float = 0.2) -> None:
        self.rt, self.generation_id, self.interval = rt, generation_id, interval
        self._next = 0.0
        self._cancelled = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now >= self._next:
            self._next = now + self.interval
            self._cancelled = job_state.cancel_requested(self.rt, self.generation_id)
        return self._cancelled


def run_job(rt: Runtime, gen_id: str) -> JobOutcome:
    """Claim and run one job to its end; what every runner (in-process thread, Celery task) does with a job id.

    Failures are recorded on the job and in the audit log by the pipeline; they are not raised here."""

    def progress(p: float) -> None:
        with rt.session() as session:
            gen = session.get(Generation, gen_id)
            if gen is not None and p - gen.progress >= 0.05:
                gen.progress = round(p, 3)
                session.add(gen)
                session.commit()

    try:
        claimed = leases.claim(rt, gen_id)
        if claimed is None:  # finished, cancelled, or running under another runner's live lease
            return JobOutcome.skipped
        run_claimed(rt, *claimed, progress=progress, should_stop=CancelCheck(rt, gen_id))
    except job_state.LeaseLost:
        return JobOutcome.lease_lost
    except Exception as exc:
        if is_transient(exc):
            log.warning("generation %s: transient failure, to be retried", gen_id, exc_info=True)
            return JobOutcome.retry
        # The pipeline recorded (and logged) the failure on the job and in the audit log.
        log.info("generation %s did not succeed", gen_id, exc_info=True)
    finally:
        discard_uploads_quietly(rt, gen_id)
    return JobOutcome.finished


def queued_ids(rt: Runtime, limit: int = 5) -> list[str]:
    """The oldest queued jobs open to any runner (not reserved for a CLI process)."""
    with rt.session() as session:
        return list(
            session.exec(
                select(Generation.id)
                .where(Generation.status == JobStatus.queued, col(Generation.lease_owner).is_(None))
                .order_by(col(Generation.created_at))
                .limit(limit)
            ).all()
        )


class Worker:
    """The API's in-process runner: queued generations on background threads until stopped, plus the periodic
    reaper and file sweep. Only used without a broker (see service/job_queue.py)."""

    def __init__(self, rt: Runtime, *, threads: int = 1, poll_seconds: float = 1.0) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_sweep = 0.0
        self._next_reap = 0.0
        self._threads = [
            threading.Thread(target=self._loop, name=f"provatar-worker-{i}", daemon=True) for i in range(threads)
        ]

    def start(self) -> None:
        self._reap()
        self._sweep()
        for t in self._threads:
            t.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)

    def run_pending(self) -> int:
        """Run queued jobs in the calling thread until the queue is empty (used by tests and one-shot commands).
        Returns how many it ran."""
        n = 0
        while (ran := self._run_next()) is not None:
            if ran:
                n += 1
        return n

    def _run_next(self) -> str | None:
        """Run the oldest queued job this thread can claim: its id, "" when another runner took each candidate
        first (try again), None when the queue is empty."""
        candidates = queued_ids(self.rt)
        if not candidates:
            return None
        for gen_id in candidates:
            if run_job(self.rt, gen_id) != JobOutcome.skipped:
                return gen_id
        return ""

    def _reap(self) -> None:
        """Retry or fail jobs whose lease expired (service/reaper.py); never lets a failure stop the worker."""
        self._next_reap = time.monotonic() + self.rt.settings.job_reaper_interval_seconds
        try:
            reap_expired_leases(self.rt)
        except Exception:
            log.warning("reaping expired job leases failed", exc_info=True)

    def _sweep(self) -> None:
        """Remove leftovers of killed runs (service/sweep.py); never lets a sweep failure stop the worker."""
        self._next_sweep = time.monotonic() + self.rt.settings.sweep_interval_seconds
        try:
            sweep_stale_files(self.rt)
        except Exception:
            log.warning("sweeping stale files failed", exc_info=True)
        try:
            purge_outputs(self.rt)  # retention, erased subjects' leftovers, consent-expiry webhooks
        except Exception:
            log.warning("purging outputs failed", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self._next_reap:
                self._reap()
            if now >= self._next_sweep:
                self._sweep()
            try:
                ran = self._run_next()
            except Exception:  # the database is unreachable: wait, then try again
                log.warning("the job worker could not read the queue", exc_info=True)
                ran = None
            if ran is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()


def discard_uploads(rt: Runtime, gen_id: str) -> None:
    """Delete a finished job's uploaded photo and audio: only their hashes are kept (audit log, C2PA ingredients).

    Only the per-request folder the API staged (`uploads/req_.../`, on disk or in the bucket: service/storage.py) is
    touched, never paths a CLI user passed in; a job that did not reach a final state (e.g. the process is stopping,
    or it was requeued) keeps them for its retry.
    """
    with rt.session() as session:
        gen = session.get(Generation, gen_id)
    if gen is None or gen.status in (JobStatus.queued, JobStatus.running):
        return
    try:
        rt.storage.discard_staged_uploads(gen.photo_path)
    except Exception:  # the bucket may be unreachable right now: the periodic sweep deletes them later
        log.warning("could not delete the uploads of generation %s", gen_id, exc_info=True)


def discard_uploads_quietly(rt: Runtime, gen_id: str) -> None:
    try:
        discard_uploads(rt, gen_id)
    except Exception:  # the database is unreachable: the periodic sweep removes them later
        log.warning("could not discard the uploads of generation %s", gen_id, exc_info=True)
