"""Prometheus metrics for `GET /metrics` (`provatar_` prefix, text exposition format).

Two sources, on purpose:

- **Requests** are measured in the process that serves them, by the API's middleware: counts and latency by method,
  route template (`/v1/generations/{generation_id}`, never the raw path, so ids do not explode the label space) and
  status. With several server processes on one machine (uvicorn/gunicorn workers) set `PROMETHEUS_MULTIPROC_DIR`
  (prometheus_client's multiprocess mode: an empty directory per start, shared by those processes): each process
  writes its samples there and every scrape adds up all of them (MultiProcessCollector).
- **Jobs, stages, audit entries, detections and policy denials** are read from the database at scrape time: job
  counts by status and the queue from `service_generation`; everything that happened from the audit log, read
  incrementally by sequence number (each entry once per process): job and queue-wait durations, each pipeline
  stage's duration and the frames rendered per second (the `stage_seconds` and `frames` a run audits with its
  result), denials by reason, detections by verdict, appends by action. So they count work done by any process on
  any machine (API, CLI, Celery workers) with no metrics plumbing in the workers, and read the same on every API
  replica: aggregate them with `max`, not `sum`. They are never written to the multiprocess directory (a scrape
  would add them up once per process). Their counters start from the log's totals when a process starts, which
  keeps them monotonic across restarts.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
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
_STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
_FPS_BUCKETS = (1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200)
# prometheus_client's switch to multiprocess mode (read by the library itself when it is imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
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
        self.database = DatabaseCollector()
        r.register(self.database)

    # ------------------------------------------------------------------------------------------- per request
    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)
        if method == "POST" and route == "/v1/detections":
            self.detection_seconds.labels(str(status)).observe(seconds)

    # -------------------------------------------------------------------------------------------- per scrape
    def render(self, rt: Runtime) -> bytes:
        """Read the database's figures, then every metric in the Prometheus text format (in multiprocess mode the
        request metrics of all processes that share PROMETHEUS_MULTIPROC_DIR, summed)."""
        self.database.refresh(rt)
        if not os.environ.get(MULTIPROC_ENV):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(self.database)
        return generate_latest(registry)


class _Histogram:
    """Cumulative buckets kept in plain memory (not prometheus_client's, which go to the multiprocess files)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        self.counts[bisect.bisect_left(self.bounds, value)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


class _Family:
    """One labelled metric of the database collector: counters or histograms by label values."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] | None = None):
        self.name, self.doc, self.labels, self.buckets = name, doc, labels, buckets
        self.values: dict[tuple[str, ...], Any] = defaultdict(lambda: _Histogram(buckets) if buckets else 0.0)

    def inc(self, *labels: str) -> None:
        self.values[labels] += 1

    def observe(self, value: float, *labels: str) -> None:
        self.values[labels].observe(value)

    def collect(self) -> Metric:
        if self.buckets is None:
            counter = CounterMetricFamily(self.name, self.doc, labels=self.labels)
            for labels, value in sorted(self.values.items()):
                counter.add_metric(labels, value)
            return counter
        hist = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, h in sorted(self.values.items()):
            hist.add_metric(labels, h.cumulative(), h.sum)
        return hist


class DatabaseCollector(Collector):
    """The job, queue and audit-log metrics, computed from the database at scrape time (see the module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._audit_seq = 0  # the last audit entry counted by this process
        self._jobs: dict[str, int] = {status.value: 0 for status in JobStatus}  # 0s shown: no dashboard gaps
        self._queue_depth = 0
        self._oldest_queued = 0.0
        self.audit_entries = _Family("provatar_audit_appends", "Audit log entries by action (audit log).", ("action",))
        self.detections = _Family(
            "provatar_detections", "Detections by verdict; 'failed' when no report was made (audit log).", ("verdict",)
        )
        self.denials = _Family(
            "provatar_policy_denials", "Generation requests denied by policy, by reason code (audit log).", ("reason",)
        )
        self.job_seconds = _Family(
            "provatar_job_duration_seconds",
            "Generation job run time, start to end, by outcome (audit log).",
            ("status",),
            _JOB_BUCKETS,
        )
        self.job_wait_seconds = _Family(
            "provatar_job_queue_wait_seconds",
            "Time a job waited in the queue before it started (audit log).",
            (),
            _JOB_BUCKETS,
        )
        self.stage_seconds = _Family(
            "provatar_job_stage_duration_seconds",
            "Seconds of each pipeline stage of a succeeded job: inputs, policy, render (generate + watermark + "
            "encode), sign, publish (audit log).",
            ("stage",),
            _STAGE_BUCKETS,
        )
        self.frames_per_second = _Family(
            "provatar_job_frames_per_second",
            "Frames rendered per second of the render stage, per succeeded job (audit log).",
            (),
            _FPS_BUCKETS,
        )

    def refresh(self, rt: Runtime) -> None:
        with self._lock:
            self._read_jobs(rt)
            self._read_audit(rt)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            jobs = GaugeMetricFamily("provatar_jobs", "Generation jobs by status (database).", labels=("status",))
            for status, count in self._jobs.items():
                jobs.add_metric((status,), count)
            yield jobs
            yield GaugeMetricFamily(
                "provatar_queue_depth", "Generation jobs waiting to run (database).", value=self._queue_depth
            )
            yield GaugeMetricFamily(
                "provatar_queue_oldest_age_seconds",
                "Age of the oldest queued job; 0 when none (database).",
                value=self._oldest_queued,
            )
            yield GaugeMetricFamily(
                "provatar_audit_log_entries", "Entries in the audit log (audit log).", value=self._audit_seq
            )  # seq is 1..n without gaps
            for family in (
                self.audit_entries,
                self.detections,
                self.denials,
                self.job_seconds,
                self.job_wait_seconds,
                self.stage_seconds,
                self.frames_per_second,
            ):
                yield family.collect()

    def _read_jobs(self, rt: Runtime) -> None:
        with rt.session() as session:
            counts = dict(session.execute(select(Generation.status, func.count()).group_by(Generation.status)).all())
            oldest = session.execute(
                select(func.min(Generation.created_at)).where(col(Generation.status) == JobStatus.queued)
            ).scalar()
        self._jobs = {status.value: counts.get(status, 0) for status in JobStatus}
        self._queue_depth = counts.get(JobStatus.queued, 0)
        self._oldest_queued = max(0.0, time.time() - _aware(oldest).timestamp()) if oldest else 0.0

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
            self.audit_entries.inc(row.action)
            self._count_event(row)
        for generation_id, row in ends:
            created, started = jobs.get(generation_id, (None, None))
            if started is None:  # cancelled or denied before it ran
                continue
            ended = datetime.fromisoformat(row.ts)
            self.job_seconds.observe(max(0.0, (ended - started).total_seconds()), str(_job_end(row)))
            if created is not None:
                self.job_wait_seconds.observe(max(0.0, (started - created).total_seconds()))
        if rows:
            self._audit_seq = rows[-1].seq

    def _count_event(self, row: Any) -> None:
        if row.action == "detection.completed":
            self.detections.inc(str(row.details.get("verdict", "unknown")))
        elif row.action == "detection.failed":
            self.detections.inc("failed")
        elif row.action == "policy.decision" and row.outcome == "denied":
            for reason in (row.details.get("decision") or {}).get("reasons", []) or ["unspecified"]:
                self.denials.inc(str(reason))
        elif row.action == "generation.completed":
            stages = row.details.get("stage_seconds") or {}
            for stage, seconds in stages.items():
                if isinstance(seconds, int | float):
                    self.stage_seconds.observe(float(seconds), str(stage))
            render, frames = stages.get("render"), row.details.get("frames")
            if isinstance(render, int | float) and render > 0 and isinstance(frames, int) and frames > 0:
                self.frames_per_second.observe(frames / render)


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
