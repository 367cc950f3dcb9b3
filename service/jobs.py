"""In-process job worker. Jobs live in the database (service_generation), not in memory, so a restart never loses
one: queued jobs are picked up again, and a job that was running when the process died is retried once and then
failed visibly with the code `interrupted`."""

from __future__ import annotations

import logging
import threading
import time

from sqlmodel import col, select

from service import job_state
from service.models import Generation, JobStatus
from service.pipeline import run_generation
from service.retention import purge_outputs
from service.runtime import Runtime
from service.sweep import sweep_stale_files

log = logging.getLogger("provatar.jobs")
MAX_ATTEMPTS = 2


def recover_interrupted(rt: Runtime) -> list[str]:
    """Requeue (or fail, after MAX_ATTEMPTS) jobs left `running` by a process that stopped. Returns their ids.

    A job whose cancellation was requested is cancelled instead: it must never run again."""
    with rt.session() as session:
        stuck = session.exec(select(Generation).where(Generation.status == JobStatus.running)).all()
    touched: list[str] = []
    for gen in stuck:
        if gen.cancel_requested_at is not None:
            to, fields = JobStatus.cancelled, dict(job_state.CANCELLED_FIELDS)
        elif gen.params.get("live"):  # a live stream's client is gone with the process: it cannot be resumed
            to = JobStatus.failed
            fields = {"error_code": "interrupted", "error_message": "the service stopped during the live stream"}
        elif gen.attempts < MAX_ATTEMPTS:
            to, fields = JobStatus.queued, {}
        else:
            to = JobStatus.failed
            fields = {
                "error_code": "interrupted",
                "error_message": f"the service stopped while this job ran ({gen.attempts} attempts)",
            }
        if job_state.move(rt, gen.id, to, sources=frozenset({JobStatus.running}), **fields) is None:
            continue
        touched.append(gen.id)
        rt.audit.append(
            action={JobStatus.queued: "generation.requeued"}.get(to, f"generation.{to.value}"),
            actor="service:worker",
            subject=gen.subject_id,
            outcome="error" if to == JobStatus.failed else "ok",
            request_id=gen.request_id,
            details={"generation_id": gen.id, "reason": "interrupted", "attempts": gen.attempts},
        )
    return touched


def claim_next(rt: Runtime) -> str | None:
    """Atomically move the oldest queued job to running; None when the queue is empty."""
    with rt.session() as session:
        candidates = session.exec(
            select(Generation.id)
            .where(Generation.status == JobStatus.queued)
            .order_by(col(Generation.created_at))
            .limit(5)
        ).all()
    for gen_id in candidates:
        if job_state.move(rt, gen_id, JobStatus.running, sources=frozenset({JobStatus.queued})) is not None:
            return gen_id
    return None


class CancelCheck:
    """`should_stop` for a running job: asks the database at most every `interval` seconds (frames come at
    50+ per second; a cancel needs to land within a fraction of a second, not within one frame)."""

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


class Worker:
    """Runs queued generations on background threads until stopped."""

    def __init__(self, rt: Runtime, *, threads: int = 1, poll_seconds: float = 1.0) -> None:
        self.rt = rt
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._next_sweep = 0.0
        self._threads = [
            threading.Thread(target=self._loop, name=f"provatar-worker-{i}", daemon=True) for i in range(threads)
        ]

    def start(self) -> None:
        recover_interrupted(self.rt)
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
        """Run queued jobs in the calling thread until the queue is empty (used by tests and one-shot commands)."""
        n = 0
        while (gen_id := claim_next(self.rt)) is not None:
            self._run(gen_id)
            n += 1
        return n

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
            if time.monotonic() >= self._next_sweep:
                self._sweep()
            gen_id = claim_next(self.rt)
            if gen_id is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self._run(gen_id)

    def _run(self, gen_id: str) -> None:
        def progress(p: float) -> None:
            with self.rt.session() as session:
                gen = session.get(Generation, gen_id)
                if gen is not None and p - gen.progress >= 0.05:
                    gen.progress = round(p, 3)
                    session.add(gen)
                    session.commit()

        try:
            run_generation(self.rt, gen_id, progress=progress, should_stop=CancelCheck(self.rt, gen_id))
        except Exception:  # the pipeline recorded (and logged) the failure on the job and in the audit log
            log.info("generation %s did not succeed", gen_id, exc_info=True)
        finally:
            discard_uploads(self.rt, gen_id)


def discard_uploads(rt: Runtime, gen_id: str) -> None:
    """Delete a finished job's uploaded photo and audio: only their hashes are kept (audit log, C2PA ingredients).

    Only the per-request folder the API staged (`uploads/req_.../`, on disk or in the bucket: service/storage.py) is
    touched, never paths a CLI user passed in; a job that did not reach a final state (e.g. the process is stopping)
    keeps them for its retry.
    """
    with rt.session() as session:
        gen = session.get(Generation, gen_id)
    if gen is None or gen.status in (JobStatus.queued, JobStatus.running):
        return
    try:
        rt.storage.discard_staged_uploads(gen.photo_path)
    except Exception:  # the bucket may be unreachable right now: the periodic sweep deletes them later
        log.warning("could not delete the uploads of generation %s", gen_id, exc_info=True)
