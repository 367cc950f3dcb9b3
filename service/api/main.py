"""The FastAPI application: routers wired in one place, errors mapped in one place, every rejection audited."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.errors import AuditError
from generation.errors import GenerationError
from policies.errors import PolicyError
from safeguards.errors import SafeguardError
from service.api.routes import audit, detections, generations, health, reviews, stream, subjects, token
from service.errors import ServiceError, describe
from service.jobs import Worker
from service.runtime import Runtime
from service.settings import Settings, get_settings

log = logging.getLogger("provatar.api")


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_worker: bool = True
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        worker = Worker(rt, threads=settings.worker_threads)
        app.state.worker = worker
        if start_worker:
            worker.start()
        rt.audit.append(action="service.started", actor="service", outcome="ok", details={"version": app.version})
        try:
            yield
        finally:
            if start_worker:
                worker.stop()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="provatar",
        version="0.1.0",
        summary="Consent-gated talking-face video generation with watermarking, C2PA provenance and audit.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def add_request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid[:64]
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    def _audit_rejection(request: Request, code: str, message: str, status: int) -> None:
        principal = getattr(request.state, "principal", None)
        action = "auth.failed" if status in (401, 403) and code != "denied" else "request.rejected"
        request.app.state.runtime.audit.append(
            action=action,
            actor=principal.actor if principal else f"anonymous@{request.client.host if request.client else '?'}",
            outcome="denied" if status in (401, 403) else "rejected",
            request_id=getattr(request.state, "request_id", None),
            details={
                "method": request.method,
                "path": request.url.path,
                "status": status,
                "code": code,
                "message": message,
            },
        )

    async def handle_error(request: Request, exc: Exception) -> JSONResponse:
        problem = describe(exc)
        if problem.http_status >= 500:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        # Policy denials were audited as policy decisions; everything else that is refused is audited here.
        if "decision" not in problem.details:
            _audit_rejection(request, problem.code, problem.message, problem.http_status)
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if problem.http_status == 401 else None
        return JSONResponse(problem.to_json(), status_code=problem.http_status, headers=headers)

    # Our error families are answered by ExceptionMiddleware; anything else reaches Starlette's
    # ServerErrorMiddleware through the same handler (a 500 without internals, logged with its traceback).
    for family in (ServiceError, GenerationError, SafeguardError, AuditError, PolicyError, Exception):
        app.add_exception_handler(family, handle_error)

    @app.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        _audit_rejection(request, "invalid_request", message, 422)
        return JSONResponse({"code": "invalid_request", "message": message, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code != 404 or request.url.path.startswith("/v1"):
            _audit_rejection(request, "http_error", str(exc.detail), exc.status_code)
        return JSONResponse({"code": "http_error", "message": str(exc.detail)}, status_code=exc.status_code)

    for router in (
        health.router,
        token.router,
        subjects.router,
        generations.router,
        stream.router,
        detections.router,
        audit.router,
    ):
        app.include_router(router)
    app.include_router(reviews.router)
    return app
