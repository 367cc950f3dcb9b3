"""What every console route shares: templates, the signed-in user, scope and CSRF checks, audit entries.

Imported by the route modules; imports nothing from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from service.auth import secret_version
from service.console import session as sessions
from service.console.roles import NavItem, console_scopes, nav_for, roles_for
from service.errors import ConsoleSignInRequired, CsrfRefused, Forbidden
from service.keys import derive_key
from service.models import Client
from service.ratelimit import RateLimiter
from service.rejection_audit import RejectionAudit
from service.runtime import Runtime

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Readable JSON for <pre> blocks; autoescaping then makes it safe (Jinja's `tojson` would show <, > and & as \u003c).
templates.env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def parent_app(request: Request) -> FastAPI:
    """The API application the console is mounted in (its runtime, rate limiter and rejection audit)."""
    parent: FastAPI = request.app.state.parent
    return parent


def runtime(request: Request) -> Runtime:
    rt: Runtime = parent_app(request).state.runtime
    return rt


def limiter(request: Request) -> RateLimiter:
    lim: RateLimiter = parent_app(request).state.limiter
    return lim


def rejections(request: Request) -> RejectionAudit:
    rej: RejectionAudit = parent_app(request).state.rejections
    return rej


def session_key(rt: Runtime) -> bytes:
    return derive_key(rt.settings.keys_dir, "console-session/v1")


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "-")


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS: the request itself, or the configured public URL (behind a
    TLS-terminating proxy whose forwarded headers uvicorn does not trust, the request looks like plain HTTP)."""
    public = runtime(request).settings.public_url or ""
    return request.url.scheme == "https" or public.lower().startswith("https://")


def source(request: Request) -> str:
    return request.client.host if request.client else "?"


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in client, with the scopes the console acts on and the CSRF token of its session."""

    client_id: str
    name: str
    scopes: frozenset[str]
    csrf: str

    @property
    def actor(self) -> str:
        return f"client:{self.client_id}"

    @property
    def roles(self) -> list[str]:
        return roles_for(self.scopes)

    @property
    def nav(self) -> list[NavItem]:
        return nav_for(self.scopes)

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def current_user(request: Request) -> ConsoleUser:
    """The session's user; ConsoleSignInRequired when there is no valid session, or its client was disabled or its
    secret rotated since. A session seen again after a minute gets a fresh idle clock (the cookie is re-set)."""
    cached = getattr(request.state, "console_user", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    rt = runtime(request)
    cookie = request.cookies.get(sessions.SESSION_COOKIE)
    if not cookie:
        raise ConsoleSignInRequired("sign in to use the console")
    key = session_key(rt)
    try:
        claims = sessions.decode_session(cookie, key, idle_s=rt.settings.console_idle_seconds)
    except sessions.BadSession as exc:
        request.state.console_clear_cookie = True
        raise ConsoleSignInRequired(str(exc)) from exc
    with rt.session() as db:
        client = db.get(Client, claims.client_id)
        if client is None or client.disabled or secret_version(client) != claims.sv:
            request.state.console_clear_cookie = True
            raise ConsoleSignInRequired("the client was disabled or its secret rotated: sign in again")
        name, scopes = client.name, console_scopes(client.scopes)
    refreshed = sessions.touched(claims)
    if refreshed.last_seen - claims.last_seen >= 60:
        request.state.console_set_cookie = sessions.encode_session(refreshed, key)
    user = ConsoleUser(claims.client_id, name, scopes, sessions.csrf_token(claims, key))
    request.state.console_user = user
    return user


SignedIn = Annotated[ConsoleUser, Depends(current_user)]


def require(scope: str) -> Any:
    """A page for holders of `scope`: 403 (page, audited) otherwise."""

    def dependency(user: SignedIn) -> ConsoleUser:
        if not user.can(scope):
            raise Forbidden(
                f"your console role does not include this page (it needs the {scope!r} scope)",
                details={"required_scope": scope},
            )
        return user

    return Depends(dependency)


def require_post(scope: str | None) -> Any:
    """A form action: the session's CSRF token first (a forged cross-site request learns nothing more), then the
    scope. Both refusals are 403 pages and audited."""

    def dependency(user: SignedIn, csrf_token: Annotated[str | None, Form()] = None) -> ConsoleUser:
        if not sessions.csrf_matches(csrf_token, user.csrf):
            raise CsrfRefused("the form's CSRF token is missing or not this session's", details={"via": "console"})
        if scope is not None and not user.can(scope):
            raise Forbidden(
                f"your console role does not include this action (it needs the {scope!r} scope)",
                details={"required_scope": scope},
            )
        return user

    return Depends(dependency)


def audit_console(
    request: Request,
    *,
    action: str,
    actor: str,
    outcome: str = "ok",
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """An audit entry for something done through the console (`via: console`, with the request id, which the
    entries of the operation itself share)."""
    runtime(request).audit.append(
        action=action,
        actor=actor,
        outcome=outcome,
        subject=subject,
        request_id=request_id(request),
        details={"via": "console", "path": request.url.path, **(details or {})},
    )


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    user: ConsoleUser | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    user = user or getattr(request.state, "console_user", None)
    ctx = {"request": request, "user": user, "prefix": PREFIX, "request_id": request_id(request), **(context or {})}
    return templates.TemplateResponse(request, template, ctx, status_code=status_code, headers=headers)
