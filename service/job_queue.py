"""How the API hands a new job to a runner: the in-process Worker (the default: no service needed), or the Celery
broker when PROVATAR_BROKER_URL is set (then `provatar worker` processes run the jobs, and the API runs only the
reaper, service/reaper.py)."""

from __future__ import annotations

import logging
from typing import Protocol

from service.jobs import Worker
from service.reaper import Reaper
from service.runtime import Runtime

log = logging.getLogger("provatar.jobs")


class JobQueue(Protocol):
    def submit(self, generation_id: str) -> None:
        """Hand a persisted, queued job to whoever runs jobs. Never raises: the job is in the database already."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a job running in this process gets `timeout` seconds to finish."""


class InProcessQueue:
    """Jobs run on this process's Worker threads, which poll the database (and reap expired leases)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def submit(self, generation_id: str) -> None:
        self.worker.notify()

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop(timeout)


class BrokerQueue:
    """Jobs go to the Celery broker; this process reaps expired leases and re-sends unclaimed jobs."""

    def __init__(self, rt: Runtime) -> None:
        from service.tasks import create_celery, enqueue  # Celery loads only where a broker is configured

        self.celery = create_celery(rt.settings)
        self._enqueue = enqueue
        self.reaper = Reaper(rt, enqueue=self._send, sweep=True, purge=True)

    def _send(self, generation_id: str) -> None:
        self._enqueue(self.celery, generation_id)

    def submit(self, generation_id: str) -> None:
        try:
            self._send(generation_id)
        except Exception:  # broker unreachable: the job stays queued and the reaper re-sends it later
            log.warning(
                "could not send generation %s to the broker; the reaper will re-send it", generation_id, exc_info=True
            )

    def start(self) -> None:
        self.reaper.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.reaper.stop()  # jobs run in the workers, not here


def job_queue(rt: Runtime, worker: Worker) -> JobQueue:
    return BrokerQueue(rt) if rt.settings.broker_url else InProcessQueue(worker)
