from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from service.api.deps import RuntimeDep
from service.api.problems import described
from service.errors import RETRY_UNAVAILABLE_S
from service.readiness import Readiness, check_readiness
from service.runtime import Runtime

router = APIRouter(tags=["health"])

# After a request failed because the database or the disk did (a 503), readiness stays failed this long, so a load
# balancer stops sending traffic even when the failure is one that a read-only probe cannot see (SQLite "database or
# disk is full" only shows on a write).
UNAVAILABLE_WINDOW_S = float(RETRY_UNAVAILABLE_S)


def record_unavailable(app: FastAPI, code: str) -> None:
    app.state.last_unavailable = (time.monotonic(), code)


def _readiness(rt: Runtime, app: FastAPI) -> Readiness:
    report = check_readiness(rt)
    last = getattr(app.state, "last_unavailable", None)
    if last is not None and time.monotonic() - last[0] < UNAVAILABLE_WINDOW_S:
        report.checks["recent_failure"] = {
            "ok": False,
            "code": last[1],
            "seconds_ago": round(time.monotonic() - last[0], 1),
        }
    return report


@router.get("/health/live")
def live() -> dict[str, str]:
    """Liveness: the process is up and serving HTTP. Checks no dependency on purpose: a database outage must make
    the service not *ready* (taken out of the load balancer), not *dead* (restarted in a loop by the orchestrator)."""
    return {"status": "ok"}


_NOT_READY = {
    503: described(
        "not ready: a check failed (problem+json listing each check in `failed` and `checks`)",
        **{"Retry-After": "seconds to wait before probing again"},
    )
}


@router.get("/health/ready", responses=_NOT_READY)
def ready(rt: RuntimeDep, request: Request) -> Any:
    """Readiness, one entry per dependency with its status and latency (service/readiness.py): database, audit log,
    storage (bucket or data dir, and free space), broker (when configured), models; and no request failed on the
    database or the disk just now. 503 problem+json naming the failed checks."""
    report = _readiness(rt, request.app)
    failed = report.failed
    if failed:
        body = {
            "type": "/problems/service_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "not ready: " + ", ".join(failed),
            "instance": str(request.url.path),
            "code": "service_unavailable",
            "message": "not ready: " + ", ".join(failed),
            "failed": failed,
            "checks": report.checks,
        }
        return JSONResponse(
            body,
            status_code=503,
            media_type="application/problem+json",
            headers={"Retry-After": str(RETRY_UNAVAILABLE_S), "Cache-Control": "no-store"},
        )
    checks = report.checks
    return {
        "status": "ok",
        "database": checks["database"]["dialect"],
        "audit_entries": checks["audit_log"]["entries"],
        "checks": checks,
    }


@router.get("/health", responses=_NOT_READY)
def health(rt: RuntimeDep, request: Request) -> Any:
    """The same as /health/ready (kept for existing probes and clients)."""
    return ready(rt, request)


@router.get("/.well-known/jwks.json")
def jwks(rt: RuntimeDep) -> dict[str, object]:
    """Public keys that verify this service's access tokens."""
    return rt.tokens.jwks()
