"""Job leases: the runner that claims a job (a Celery worker, the API's in-process worker, `provatar generate`) owns
it while it keeps renewing the lease; nobody else runs it, and only the owner may move it on.

A claim is one conditional UPDATE (queued -> running, owner, expiry). While the job renders, a heartbeat thread
renews the lease every `job_lease_seconds / 3`; the runner's final move is conditional on still holding it
(`held(owner)`). A runner that dies stops renewing: its lease expires and the reaper (service/reaper.py) requeues or
fails the job. A job alive in another process is never taken over, whatever restarts.

Expiry times come from the runners' clocks: keep the machines NTP-synchronised (skew far below a lease).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import ColumnElement, or_, update
from sqlmodel import col

from service import job_state
from service.models import Generation, JobStatus
from service.runtime import Runtime

log = logging.getLogger("provatar.leases")


def new_owner() -> str:
    """A lease owner id, unique per claim: host, process and a random token (readable in the database)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


def held(owner: str) -> ColumnElement[bool]:
    """The condition "this owner still holds the job's lease", for conditional moves."""
    return col(Generation.lease_owner) == owner


@dataclass(frozen=True)
class Lease:
    generation_id: str
    owner: str
    seconds: float


def claim(rt: Runtime, generation_id: str, *, owner: str | None = None) -> tuple[Lease, Generation] | None:
    """Take a queued job: running, owned by `owner` for `job_lease_seconds`, one more attempt. None when it is not
    queued (finished, cancelled, or running under someone else's lease) or is reserved for another owner (a CLI
    `generate` keeps its job to itself): the caller then has nothing to do."""
    lease = Lease(generation_id, owner or new_owner(), rt.settings.job_lease_seconds)
    now = datetime.now(UTC)
    gen = job_state.move(
        rt,
        generation_id,
        JobStatus.running,
        conditions=[or_(col(Generation.lease_owner).is_(None), held(lease.owner))],
        attempts_inc=True,
        started_at=now,
        lease_owner=lease.owner,
        lease_expires_at=now + timedelta(seconds=lease.seconds),
        heartbeat_at=now,
    )
    return None if gen is None else (lease, gen)


def renew(rt: Runtime, lease: Lease) -> bool:
    """Extend the lease; False when this owner no longer holds it (the job moved on without us)."""
    now = datetime.now(UTC)
    with rt.session() as session:
        result = session.execute(
            update(Generation)
            .where(
                col(Generation.id) == lease.generation_id,
                col(Generation.status) == JobStatus.running,
                held(lease.owner),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease.seconds), heartbeat_at=now)
        )
        session.commit()
        return result.rowcount == 1  # type: ignore[attr-defined]


def _always_alive() -> bool:
    return True


# Whether this process should still be running jobs. A Celery prefork child sets it to "my worker process is still
# my parent": where the child outlives a killed worker (Celery's PR_SET_PDEATHSIG is Linux-only), it stops renewing,
# so its job is retried elsewhere instead of finishing unsupervised.
_process_alive: Callable[[], bool] = _always_alive


def set_process_probe(probe: Callable[[], bool]) -> None:
    global _process_alive
    _process_alive = probe


class Heartbeat:
    """Renews a lease on a background thread while the job runs (`with Heartbeat(rt, lease) as beat:`).

    `lost` is set when the lease cannot be kept: another runner or the reaper took the job, or this process should
    stop (see set_process_probe). The render checks it at frame boundaries. A renewal that fails for a transient
    reason (database briefly unreachable) is retried at the next beat; the lease only lapses after `seconds`."""

    def __init__(self, rt: Runtime, lease: Lease, *, interval: float | None = None) -> None:
        self.rt, self.lease = rt, lease
        self.interval = interval if interval is not None else lease.seconds / 3
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"provatar-lease-{lease.generation_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not _process_alive():
                log.warning("stopping job %s: this worker process was orphaned", self.lease.generation_id)
                self.lost.set()
                return
            try:
                kept = renew(self.rt, self.lease)
            except Exception:
                log.warning("could not renew the lease of job %s", self.lease.generation_id, exc_info=True)
                continue
            if not kept:
                log.warning("lost the lease of job %s (owner %s)", self.lease.generation_id, self.lease.owner)
                self.lost.set()
                return
