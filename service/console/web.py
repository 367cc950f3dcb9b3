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
    """The signed-in principal (a client, or an OIDC user `oidc:<sub>`), with the scopes the console acts on, its
    session's id and that session's CSRF token."""

    principal: str
    name: str
    scopes: frozenset[str]
    csrf: str
    session_id: str

    @property
    def actor(self) -> str:
        return self.principal

    @property
    def client_id(self) -> str:
        """The id whose generations this user owns: a client's id; an OIDC user owns none (`oidc:<sub>` names no
        client)."""
        return self.principal.removeprefix("client:")

    @property
    def roles(self) -> list[str]:
        return roles_for(self.scopes)

    @property
    def nav(self) -> list[NavItem]:
        return nav_for(self.scopes)

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def current_user(request: Request) -> ConsoleUser:
    """The session's user; ConsoleSignInRequired when the cookie names no live session (none, unknown, signed out,
    revoked, expired, idle too long), or a client session whose client was disabled or its secret rotated since
    (that session is ended in the table too)."""
    cached = getattr(request.state, "console_user", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    rt = runtime(request)
    token = request.cookies.get(sessions.SESSION_COOKIE)
    if not token:
        raise ConsoleSignInRequired("sign in to use the console")
    with rt.session() as db:
        try:
            row = sessions.find_session(db, token, idle_s=rt.settings.console_idle_seconds)
        except sessions.BadSession as exc:
            request.state.console_clear_cookie = True
            raise ConsoleSignInRequired(str(exc)) from exc
        scopes = frozenset(row.scopes)
        if row.via == "client":
            client = db.get(Client, row.client_id) if row.client_id else None
            if client is None or client.disabled or secret_version(client) != row.secret_version:
                sessions.end_session(row, by="provatar", reason="client_changed")
                db.add(row)
                db.commit()
                request.state.console_clear_cookie = True
                raise ConsoleSignInRequired("the client was disabled or its secret rotated: sign in again")
            scopes = console_scopes(client.scopes)  # a client's scopes changed since sign-in apply at once
        if sessions.touch(row):
            db.add(row)
            db.commit()
        user = ConsoleUser(row.principal, row.name, scopes, sessions.csrf_token(row.id, session_key(rt)), row.id)
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
