"""The browser console for reviewers, analysts and consent officers, mounted by the API app at /console.

Server-rendered pages (Jinja2 templates, committed CSS and a few lines of JavaScript; nothing from a CDN). It is a
sub-application so that its errors are HTML pages rather than problem+json; it reaches the API app's runtime,
rate limiter and rejection audit through `state.parent`. Errors are still described by `service.errors.describe`,
the one place that maps them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.errors import AuditError
from generation.errors import GenerationError
from policies.errors import PolicyError
from safeguards.errors import SafeguardError
from service.api.deps import refuse_control_characters
from service.console import routes_audit, routes_auth, routes_detect, routes_oidc, routes_subjects
from service.console import session as sessions
from service.console.web import HERE, PREFIX, audit_console, is_https, rejections, render, request_id, source
from service.errors import AUTH_FAILURE_CODES, ExitStatus, Problem, ServiceError, describe

log = logging.getLogger("provatar.console")

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class MountedRoute:
    """What the metrics middleware reads from `scope["route"]`: the template, with the console's prefix."""

    path: str


def create_console(parent: FastAPI) -> FastAPI:
    """The console app; mount it with `app.mount("/console", create_console(app))`."""
    console = FastAPI(
        title="provatar console",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(refuse_control_characters)],
    )
    console.state.parent = parent
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (routes_auth, routes_oidc, routes_audit, routes_subjects, routes_detect):
        console.include_router(module.router)

    @console.middleware("http")
    async def session_cookie_and_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        route = request.scope.get("route")
        if route is not None and not str(getattr(route, "path", "")).startswith(PREFIX):
            # The API's request metrics label by route template; ours are relative to the mount, so say where.
            request.scope["route"] = MountedRoute(PREFIX + str(getattr(route, "path", "")))
        secure = is_https(request)
        if getattr(request.state, "console_clear_cookie", False):
            response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith(f"{PREFIX}/static/"):
            headers.setdefault("Cache-Control", "no-store")  # pages hold audit entries and personal data
        if secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    def audit_refusal(request: Request, code: str, message: str, status: int) -> None:
        user = getattr(request.state, "console_user", None)
        host = source(request)
        actor = user.actor if user else f"anonymous@{host}"
        details = {"method": request.method, "path": request.url.path, "status": status, "code": code,
                   "message": message, "via": "console"}  # fmt: skip
        try:
            # Floods (429s, anonymous failures) are summarised per source like the API's; a signed-in client's
            # refusal is recorded in full: who tried what.
            if status == 429 or (user is None and code in AUTH_FAILURE_CODES):
                kind = "rate_limit.exceeded" if status == 429 else "auth.failed"
                rejections(request).record(
                    kind=kind, source=host, actor=actor, outcome="denied", details=details,
                    request_id=request_id(request),
                )  # fmt: skip
            else:
                audit_console(request, action="request.rejected", actor=actor, outcome="rejected", details=details)
        except Exception:  # a full disk or a lost database must not turn the page into a traceback
            log.warning("could not audit a rejected console request %s", request.url.path, exc_info=True)

    async def handle_error(request: Request, exc: Exception) -> Response:
        problem = describe(exc)
        if problem.code == "console_sign_in_required":
            if request.method != "GET":
                audit_refusal(request, problem.code, problem.message, 401)
            why = "expired" if request.cookies.get(sessions.SESSION_COOKIE) else "required"
            query = urlencode({"next": request.url.path, "why": why})
            return RedirectResponse(f"{PREFIX}/sign-in?{query}", status_code=303)
        if problem.http_status >= 500:
            log.error("error on console %s %s", request.method, request.url.path, exc_info=exc)
        if "decision" not in problem.details:
            audit_refusal(request, problem.code, problem.message, problem.http_status)
        headers = {"Retry-After": problem.headers["Retry-After"]} if "Retry-After" in problem.headers else None
        return render(request, "error.html", {"problem": problem}, status_code=problem.http_status, headers=headers)

    # Our error families are answered inside the app (ExceptionMiddleware, so the cookie/header middleware still
    # runs); anything else reaches Starlette's ServerErrorMiddleware through the same handler, as in the API app.
    for family in (ServiceError, GenerationError, SafeguardError, AuditError, PolicyError, Exception):
        console.add_exception_handler(family, handle_error)

    @console.exception_handler(RequestValidationError)
    async def handle_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())[1:]), "message": e.get("msg", "")} for e in exc.errors()
        ]
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid form"
        audit_refusal(request, "invalid_request", message, 422)
        return render(request, "error.html", {"problem": describe_validation(message)}, status_code=422)

    @console.exception_handler(StarletteHTTPException)
    async def handle_http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 404:
            audit_refusal(request, "http_error", str(exc.detail), exc.status_code)
        problem = describe_http(exc.status_code, str(exc.detail))
        return render(request, "error.html", {"problem": problem}, status_code=exc.status_code)

    return console


def describe_validation(message: str) -> Problem:
    return Problem(
        "invalid_request", message, 422, ExitStatus.INVALID_INPUT, "check the form's fields and send it again"
    )


def describe_http(status: int, detail: str) -> Problem:
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    hint = "use the navigation: this console address does not exist" if status == 404 else None
    return Problem(code, detail, status, ExitStatus.INVALID_INPUT, hint)
