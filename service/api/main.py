"""The FastAPI application: routers wired in one place, errors mapped in one place, every rejection audited."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.errors import AuditError
from generation.errors import GenerationError
from policies.errors import PolicyError
from safeguards.errors import SafeguardError
from service.api.deps import refuse_control_characters
from service.api.problems import COMMON_ERRORS, PUBLIC_ERRORS, ProblemResponse, add_problem_schema, problem_response
from service.api.routes import (
    audit,
    clients,
    detections,
    generations,
    health,
    problems,
    reviews,
    stream,
    subjects,
    token,
    webhooks,
)
from service.console import create_console
from service.errors import AUTH_FAILURE_CODES, HINTS, ExitStatus, Problem, ServiceError, describe
from service.job_queue import job_queue
from service.jobs import Worker
from service.metrics import CONTENT_TYPE_LATEST, UNMATCHED_ROUTE, Metrics
from service.ratelimit import RateLimiter
from service.rejection_audit import RejectionAudit
from service.runtime import Runtime
from service.settings import Settings, get_settings
from service.structured_logs import request_id_var
from service.webhooks import Dispatcher

log = logging.getLogger("provatar.api")
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_DESCRIPTION = (
    "Authenticate with the OAuth2 client-credentials grant (`POST /v1/token`, RFC 6749 §4.4; metadata at "
    "`/.well-known/oauth-authorization-server`, RFC 8414) and send `Authorization: Bearer <token>`. "
    "Every error outside the token endpoint is `application/problem+json` (RFC 9457) with provatar's `code` and "
    "`hint` as extension members; the token endpoint answers errors as RFC 6749 §5.2 says."
)


def _flush_logs() -> None:
    """Push buffered log lines out before the process exits (a shipper reading stdout must not lose the last)."""
    for logger in (logging.getLogger(), logging.getLogger("provatar"), logging.getLogger("uvicorn")):
        for handler in logger.handlers:
            handler.flush()


def create_app(
    settings: Settings | None = None, *, runtime: Runtime | None = None, start_worker: bool = True
) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        worker = Worker(rt, threads=settings.worker_threads)
        app.state.worker = worker  # runs jobs only without a broker (tests drive it with run_pending)
        jobs = job_queue(rt, worker)
        app.state.jobs = jobs
        app.state.limiter = RateLimiter(settings)
        rejections = RejectionAudit(rt.audit, window_seconds=settings.rejection_summary_seconds)
        app.state.rejections = rejections
        rejections.start()
        dispatcher = Dispatcher(rt)
        app.state.dispatcher = dispatcher
        dispatcher.start()
        if start_worker:
            jobs.start()
        rt.audit.append(
            action="service.started",
            actor="service",
            outcome="ok",
            details={
                "version": app.version,
                "rate_limit_backend": app.state.limiter.backend,
                "jobs": "broker" if settings.broker_url else "in-process",
            },
        )
        app.state.shutdown_hooks = []
        try:
            yield
        finally:
            # Graceful shutdown (SIGTERM): the server has stopped accepting and drained its requests (uvicorn's
            # timeout_graceful_shutdown). The in-process worker takes no new job and gets the grace period to
            # finish the one it runs; a job still running after that keeps its lease until it expires, then the reaper
            # (service/reaper.py) of any live process requeues it. `app.state.shutdown_hooks` run next, with the
            # worker stopped.
            grace = settings.shutdown_grace_seconds
            log.info("shutting down: the worker has %.0f s to finish its job", grace)
            if start_worker:
                jobs.stop(timeout=grace)
            for hook in app.state.shutdown_hooks:
                try:
                    hook()
                except Exception:
                    log.warning("a shutdown hook failed", exc_info=True)
            dispatcher.stop()
            rejections.stop()
            try:
                rt.audit.append(
                    action="service.stopped", actor="service", outcome="ok", details={"version": app.version}
                )
            except Exception:  # the database may be the reason we stop
                log.warning("could not audit the shutdown", exc_info=True)
            log.info("stopped")
            _flush_logs()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="provatar",
        version="0.1.0",
        summary="Consent-gated talking-face video generation with watermarking, C2PA provenance and audit.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_control_characters)],
    )

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Off unless configured: a browser on another origin may call the API only when the operator names it.
        # Bearer tokens, not cookies, so no credentials mode; the headers integrators read are exposed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Location", "Retry-After", "Link", "X-Request-ID", "WWW-Authenticate"],
            max_age=600,
        )

    metrics = Metrics()
    app.state.metrics = metrics

    @app.middleware("http")
    async def record_metrics(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        status = 500  # an exception escaping the app is answered 500 by Starlette's outermost handler
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # The route template, set on the scope when a route matched: bounded label values.
            route = getattr(request.scope.get("route"), "path", None) or UNMATCHED_ROUTE
            metrics.observe_request(
                method=request.method, route=route, status=status, seconds=time.perf_counter() - start
            )

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        """Prometheus text format (service/metrics.py). Job counts and denial reasons are not for the public: with
        PROVATAR_METRICS_BEARER_TOKEN set, a scrape must send it (Prometheus `authorization` / bearer_token)."""
        token = settings.metrics_bearer_token
        if token is not None:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return Response(metrics.render(request.app.state.runtime), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def add_request_id(request: Request, call_next):  # type: ignore[no-untyped-def]
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        request.state.request_id = rid[:64]
        # Every log line of this request carries it (service/structured_logs.py). Not reset on the way out: the
        # server's access line is written after this returns, in this same per-request task, and must carry it too.
        request_id_var.set(request.state.request_id)
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        return response

    def _audit_rejection(request: Request, code: str, message: str, status: int) -> None:
        principal = getattr(request.state, "principal", None)
        source = request.client.host if request.client else "?"
        actor = principal.actor if principal else f"anonymous@{source}"
        rid = getattr(request.state, "request_id", None)
        details = {
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "code": code,
            "message": message,
        }
        if status == 429 or code in AUTH_FAILURE_CODES:
            # Floods of failed auth or of over-limit requests are summarised per source, not one entry each.
            kind = "rate_limit.exceeded" if status == 429 else "auth.failed"
            request.app.state.rejections.record(
                kind=kind, source=source, actor=actor, outcome="denied", details=details, request_id=rid
            )
            return
        request.app.state.runtime.audit.append(
            action="request.rejected", actor=actor, outcome="rejected", request_id=rid, details=details
        )

    async def handle_error(request: Request, exc: Exception) -> ProblemResponse:
        problem = describe(exc)
        if getattr(request.app.state, "runtime", None) is None:
            # An error the console sub-app (mounted at /console) re-raised after answering with its own page, which
            # it logged and audited already; doing it again here would only add noise.
            return problem_response(request, problem)
        if problem.http_status >= 500:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        if problem.http_status == 503:
            health.record_unavailable(request.app, problem.code)  # /health reports not ready for a while
        # Policy denials were audited as policy decisions; everything else that is refused is audited here. Not when
        # the database itself is unavailable: the audit log lives there, so the append would only wait out the same
        # busy timeout again (a held lock made every such request take twice as long) and fail; the log line above
        # and the access log record the request instead.
        if problem.code == "database_unavailable":
            log.warning("%s %s: database unavailable; the rejection is not audited", request.method, request.url.path)
        elif "decision" not in problem.details:
            try:
                _audit_rejection(request, problem.code, problem.message, problem.http_status)
            except Exception:  # a full disk or a lost database must not turn the answer into a plain-text 500
                log.warning("could not audit a rejected %s %s", request.method, request.url.path, exc_info=True)
        return problem_response(request, problem)

    # Our error families are answered by ExceptionMiddleware; anything else reaches Starlette's
    # ServerErrorMiddleware through the same handler (a 500 without internals, logged with its traceback).
    for family in (ServiceError, GenerationError, SafeguardError, AuditError, PolicyError, Exception):
        app.add_exception_handler(family, handle_error)

    @app.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        _audit_rejection(request, "invalid_request", message, 422)
        problem = Problem(
            "invalid_request", message, 422, ExitStatus.INVALID_INPUT, HINTS["invalid_request"], {"errors": errors}
        )
        return problem_response(request, problem)

    @app.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code != 404 or request.url.path.startswith("/v1"):
            _audit_rejection(request, code, str(exc.detail), exc.status_code)
        problem = Problem(
            code,
            str(exc.detail),
            exc.status_code,
            ExitStatus.INVALID_INPUT,
            HINTS.get(code),
            {},
            dict(exc.headers or {}),
        )
        return problem_response(request, problem)

    for public in (health.router, problems.router, token.router):
        app.include_router(public, responses=PUBLIC_ERRORS)
    app.include_router(stream.router)
    for router in (
        subjects.router,
        generations.router,
        detections.router,
        audit.router,
        clients.router,
        webhooks.router,
        reviews.router,
    ):
        app.include_router(router, responses=COMMON_ERRORS)

    app.mount("/console", create_console(app))  # the browser console (HTML pages; not in the OpenAPI)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes, description=_DESCRIPTION
            )
            app.openapi_schema = add_problem_schema(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
