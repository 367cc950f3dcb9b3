from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from service.api.deps import RuntimeDep
from service.errors import RETRY_UNAVAILABLE_S, describe
from service.runtime import Runtime

router = APIRouter(tags=["health"])

# After a request failed because the database or the disk did (a 503), readiness stays failed this long, so a load
# balancer stops sending traffic even when the failure is one that a read-only probe cannot see (SQLite "database or
# disk is full" only shows on a write).
UNAVAILABLE_WINDOW_S = float(RETRY_UNAVAILABLE_S)


def record_unavailable(app: FastAPI, code: str) -> None:
    app.state.last_unavailable = (time.monotonic(), code)


def _checks(rt: Runtime, app: FastAPI) -> tuple[dict[str, Any], list[str]]:
    checks: dict[str, Any] = {}
    failed: list[str] = []

    def run(name: str, fn: Any) -> None:
        try:
            checks[name] = fn()
        except Exception as exc:  # each check reports its own failure; /health itself never 500s
            checks[name] = {"ok": False, "code": describe(exc).code}
            failed.append(name)

    def database() -> dict[str, Any]:
        with rt.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "dialect": rt.engine.dialect.name}

    def audit_log() -> dict[str, Any]:
        checkpoint = rt.audit.checkpoint()
        return {"ok": True, "entries": checkpoint.size if checkpoint else 0}

    def storage() -> dict[str, Any]:
        data_dir = rt.settings.data_dir
        free = shutil.disk_usage(data_dir).free
        fd, probe = tempfile.mkstemp(prefix=".health.", suffix=".part", dir=data_dir)  # writable at all?
        os.close(fd)
        os.unlink(probe)
        ok = free >= rt.settings.min_free_disk_bytes
        if not ok:
            failed.append("storage")
        return {"ok": ok, "free_bytes": free, "min_free_bytes": rt.settings.min_free_disk_bytes}

    run("database", database)
    run("audit_log", audit_log)
    run("storage", storage)
    last = getattr(app.state, "last_unavailable", None)
    if last is not None and time.monotonic() - last[0] < UNAVAILABLE_WINDOW_S:
        checks["recent_failure"] = {"ok": False, "code": last[1], "seconds_ago": round(time.monotonic() - last[0], 1)}
        failed.append("recent_failure")
    return checks, failed


@router.get(
    "/health",
    responses={503: {"description": "not ready: a check failed (problem+json with the `checks`)"}},
)
def health(rt: RuntimeDep, request: Request) -> Any:
    """Liveness and readiness: the database answers, the audit chain head is readable, the data dir is writable with
    at least PROVATAR_MIN_FREE_DISK_BYTES free, and no request failed on the database or the disk just now."""
    checks, failed = _checks(rt, request.app)
    if failed:
        body = {
            "type": "/problems/service_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "not ready: " + ", ".join(failed),
            "instance": str(request.url.path),
            "code": "service_unavailable",
            "message": "not ready: " + ", ".join(failed),
            "checks": checks,
        }
        return JSONResponse(
            body,
            status_code=503,
            media_type="application/problem+json",
            headers={"Retry-After": str(RETRY_UNAVAILABLE_S), "Cache-Control": "no-store"},
        )
    database, audit_log = checks["database"], checks["audit_log"]
    return {
        "status": "ok",
        "database": database["dialect"],
        "audit_entries": audit_log["entries"],
        "checks": checks,
    }


@router.get("/.well-known/jwks.json")
def jwks(rt: RuntimeDep) -> dict[str, object]:
    """Public keys that verify this service's access tokens."""
    return rt.tokens.jwks()
