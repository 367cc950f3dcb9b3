"""Celery: generation jobs on a broker (PROVATAR_BROKER_URL, e.g. Redis) run by `provatar worker` processes.

The database stays the source of truth; a message only says "job X may be runnable". So delivery may be at least
once and the job still runs to completion once:

- `acks_late` + `reject_on_worker_lost`: a message is acknowledged after its task returns, and put back when the
  worker process running it dies, so a crash never drops a job.
- A redelivered (or duplicated) message whose job already finished, or is running under another runner's live lease,
  finds nothing to claim and returns `skipped` (service/leases.py); a job's completion is recorded with its audit
  entry in one conditional transaction (service/job_state.py): one `generation.completed` per generation.
- A whole worker killed (SIGKILL, lost machine) leaves its job running under a lease nobody renews (on Linux Celery
  kills its prefork children with it; elsewhere an orphaned child stops renewing at its next heartbeat): the reaper
  in every worker process requeues it and sends it again
  (service/reaper.py), up to `job_max_attempts` runs, then fails it with `lease_expired`.
- Transient failures (database unreachable) are retried with exponential backoff (`job_retry_max`,
  `job_retry_backoff_seconds`); deterministic ones (policy denial, bad input) are recorded on the job and not
  retried. A queued job whose message never reached the broker is re-sent by the reaper after
  `job_resend_after_seconds`.
- Cancellation is a database flag the running job checks every 0.2 s at frame boundaries, whichever process or
  machine it runs on (no revoke message needed, nothing to lose when a worker restarts).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

from service import leases
from service.jobs import JobOutcome, run_job
from service.reaper import Reaper
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("provatar.tasks")
TASK_NAME = "provatar.run_generation"
QUEUE = "provatar.generations"
MAX_BACKOFF_SECONDS = 300.0


def create_celery(settings: Settings) -> Celery:
    """The Celery app for `settings.broker_url`, with `run_generation_task` registered (used to send and to run)."""
    if not settings.broker_url:
        raise ValueError("PROVATAR_BROKER_URL is not set")
    app = Celery("provatar", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task that raised was recorded on its job already (or will be retried explicitly): acknowledge it,
        # don't redeliver it forever.
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,  # rendering is long and CPU-bound: never hold jobs another worker could run
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        task_ignore_result=True,  # the job's status lives in the database; no result backend
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacknowledged message after this; leases make that harmless for a job still running.
        broker_transport_options={"visibility_timeout": 3600},
        # Publishing from an API request: a short retry, then the submission stays queued for the reaper to re-send.
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    app.conf.provatar_settings = settings
    app.task(bind=True, name=TASK_NAME, max_retries=settings.job_retry_max)(run_generation_task)
    return app


def enqueue(app: Celery, generation_id: str) -> None:
    """Send one job to the broker (raises when the broker cannot be reached; the job stays queued in the database)."""
    app.send_task(TASK_NAME, args=[generation_id], queue=QUEUE)


def retry_delay(retries: int, base: float) -> float:
    """Exponential backoff for transient failures: base, 2*base, 4*base ... capped at MAX_BACKOFF_SECONDS."""
    return min(MAX_BACKOFF_SECONDS, base * 2**retries)


# This worker process's runtime (database, keys, models) and reaper: one per prefork child, made after the fork.
_process: dict[str, Any] = {}


def _runtime(app: Celery) -> Runtime:
    if "rt" not in _process:
        _start_process(app)
    return _process["rt"]


def _start_process(app: Celery) -> None:
    settings: Settings = app.conf.provatar_settings
    rt = Runtime(settings)
    parent = os.getppid()
    # A child whose worker process was killed is re-parented: it stops renewing, so its job is retried elsewhere.
    leases.set_process_probe(lambda: os.getppid() == parent)
    reaper = Reaper(rt, enqueue=lambda gen_id: enqueue(app, gen_id), sweep=True)
    reaper.start()
    _process.update(rt=rt, reaper=reaper)


def _stop_process() -> None:
    reaper, rt = _process.pop("reaper", None), _process.pop("rt", None)
    if reaper is not None:
        reaper.stop()
    if rt is not None:
        rt.close()


def run_generation_task(task: Task, generation_id: str) -> str:
    """Run one generation job (claimed under a lease; a no-op when it is not runnable). Returns the outcome."""
    app = task.app
    outcome = run_job(_runtime(app), generation_id)
    if outcome == JobOutcome.retry:
        settings: Settings = app.conf.provatar_settings
        retries = task.request.retries
        if retries >= settings.job_retry_max:
            log.warning("generation %s: giving up after %d retries; the reaper re-sends it", generation_id, retries)
            return outcome.value
        raise task.retry(countdown=retry_delay(retries, settings.job_retry_backoff_seconds))
    log.info("generation %s: %s", generation_id, outcome.value)
    return outcome.value


def prepare_worker(app: Celery) -> None:
    """Give every worker process (prefork child) its own runtime and reaper, made after the fork and closed at exit."""
    worker_process_init.connect(lambda **_: _start_process(app), weak=False)
    worker_process_shutdown.connect(lambda **_: _stop_process(), weak=False)


def worker_argv(*, concurrency: int, loglevel: str) -> list[str]:
    """`celery worker` arguments: prefork children, our queue, no gossip/mingle/heartbeat chatter between workers
    (they coordinate through the database, not through each other)."""
    return [
        "worker",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        "--pool=prefork",
        f"--queues={QUEUE}",
        f"--hostname=provatar-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
