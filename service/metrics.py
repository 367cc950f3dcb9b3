"""Prometheus metrics for `GET /metrics` (`provatar_` prefix, text exposition format).

Two sources, on purpose:

- **Requests** are measured in this process by the API's middleware: counts and latency by method, route template
  (`/v1/generations/{generation_id}`, never the raw path, so ids do not explode the label space) and status.
  With several uvicorn worker processes each keeps its own counters; prometheus_client's multiprocess mode (a shared
  `PROMETHEUS_MULTIPROC_DIR`) is the step for that deployment and is not set up here.
- **Jobs, audit entries, detections and policy denials** are read from the database at scrape time: job counts by
  status and the queue from `service_generation`; everything that happened from the audit log, read incrementally
  by sequence number (each entry once per process). So they count work done by any process (API, CLI, a future
  Celery worker on another machine) and read the same on every API replica: aggregate them with `max`, not `sum`.
  Their counters start from the log's totals when a process starts, which keeps them monotonic across restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlmodel import col

from audit.models import AuditEvent
from service.models import Generation, JobStatus

if TYPE_CHECKING:
    from service.runtime import Runtime

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "UNMATCHED_ROUTE"]

# Requests that matched no route (404s, scanners) share one label value.
UNMATCHED_ROUTE = "<unmatched>"
# Audit entries read per scrape at most: the first scrape of a long log catches up over several scrapes.
AUDIT_BATCH = 20_000
# Seconds: API calls are milliseconds, uploads and detections seconds, renders minutes.
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_DETECTION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
_JOB_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
# Audit actions that end a generation job, by the job status they mean.
_JOB_ENDS = {"generation.completed": "succeeded", "generation.failed": "failed", "generation.cancelled": "cancelled"}


class Metrics:
    """The metrics of one API application (its own registry, so several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "provatar_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "provatar_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.detection_seconds = Histogram(
            "provatar_detection_duration_seconds",
            "Latency of POST /v1/detections (upload, analysis, report).",
            ["status"],
            buckets=_DETECTION_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("provatar_jobs", "Generation jobs by status (database).", ["status"], registry=r)
        self.queue_depth = Gauge("provatar_queue_depth", "Generation jobs waiting to run (database).", registry=r)
        self.oldest_queued = Gauge(
            "provatar_queue_oldest_age_seconds", "Age of the oldest queued job; 0 when none (database).", registry=r
        )
        self.job_seconds = Histogram(
            "provatar_job_duration_seconds",
            "Generation job run time, start to end, by outcome (audit log).",
            ["status"],
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.job_wait_seconds = Histogram(
            "provatar_job_queue_wait_seconds",
            "Time a job waited in the queue before it started (audit log).",
            buckets=_JOB_BUCKETS,
            registry=r,
        )
        self.audit_entries = Counter(
            "provatar_audit_appends", "Audit log entries by action (audit log).", ["action"], registry=r
        )
        self.audit_size = Gauge("provatar_audit_log_entries", "Entries in the audit log (audit log).", registry=r)
        self.detections = Counter(
            "provatar_detections",
            "Detections by verdict; 'failed' when no report was made (audit log).",
            ["verdict"],
            registry=r,
        )
        self.denials = Counter(
            "provatar_policy_denials",
            "Generation requests denied by policy, by reason code (audit log).",
            ["reason"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._audit_seq = 0  # the last audit entry counted by this process
        for status in JobStatus:  # every status shows, 0 included, so dashboards need no special cases
            self.jobs.labels(status.value)

    # ------------------------------------------------------------------------------------------- per request
    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)
        if method == "POST" and route == "/v1/detections":
            self.detection_seconds.labels(str(status)).observe(seconds)

    # -------------------------------------------------------------------------------------------- per scrape
    def render(self, rt: Runtime) -> bytes:
        """Read the database's figures, then the whole registry in the Prometheus text format."""
        with self._lock:
            self._read_jobs(rt)
            self._read_audit(rt)
            return generate_latest(self.registry)

    def _read_jobs(self, rt: Runtime) -> None:
        with rt.session() as session:
            counts = dict(session.execute(select(Generation.status, func.count()).group_by(Generation.status)).all())
            oldest = session.execute(
                select(func.min(Generation.created_at)).where(col(Generation.status) == JobStatus.queued)
            ).scalar()
        for status in JobStatus:
            self.jobs.labels(status.value).set(counts.get(status, 0))
        self.queue_depth.set(counts.get(JobStatus.queued, 0))
        self.oldest_queued.set(max(0.0, time.time() - _aware(oldest).timestamp()) if oldest else 0.0)

    def _read_audit(self, rt: Runtime) -> None:
        with rt.session() as session:
            rows = session.execute(
                select(AuditEvent.seq, AuditEvent.action, AuditEvent.outcome, AuditEvent.ts, AuditEvent.details)
                .where(col(AuditEvent.seq) > self._audit_seq)
                .order_by(col(AuditEvent.seq))
                .limit(AUDIT_BATCH)
            ).all()
            ends = [(r.details.get("generation_id"), r) for r in rows if _job_end(r) is not None]
            jobs = _job_times(session, [g for g, _ in ends if g])
        for row in rows:
            self.audit_entries.labels(row.action).inc()
            self._count_event(row)
        for generation_id, row in ends:
            created, started = jobs.get(generation_id, (None, None))
            if started is None:  # cancelled or denied before it ran
                continue
            ended = datetime.fromisoformat(row.ts)
            self.job_seconds.labels(_job_end(row)).observe(max(0.0, (ended - started).total_seconds()))
            if created is not None:
                self.job_wait_seconds.observe(max(0.0, (started - created).total_seconds()))
        if rows:
            self._audit_seq = rows[-1].seq
        self.audit_size.set(self._audit_seq)  # seq is 1..n without gaps

    def _count_event(self, row: Any) -> None:
        if row.action == "detection.completed":
            self.detections.labels(str(row.details.get("verdict", "unknown"))).inc()
        elif row.action == "detection.failed":
            self.detections.labels("failed").inc()
        elif row.action == "policy.decision" and row.outcome == "denied":
            for reason in (row.details.get("decision") or {}).get("reasons", []) or ["unspecified"]:
                self.denials.labels(str(reason)).inc()


def _job_end(row: Any) -> str | None:
    """The job status an audit entry ends a job with, if it ends one (a policy denial ends it as `denied`)."""
    if row.action == "policy.decision":
        return "denied" if row.outcome == "denied" else None
    return _JOB_ENDS.get(row.action)


def _job_times(session: Any, ids: Iterable[str]) -> dict[str, tuple[datetime | None, datetime | None]]:
    ids = list(set(ids))
    times: dict[str, tuple[datetime | None, datetime | None]] = {}
    for i in range(0, len(ids), 500):  # bounded IN lists
        stmt = select(Generation.id, Generation.created_at, Generation.started_at).where(
            col(Generation.id).in_(ids[i : i + 500])
        )
        for gid, created, started in session.execute(stmt).all():
            times[gid] = (_aware(created) if created else None, _aware(started) if started else None)
    return times


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
