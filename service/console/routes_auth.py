"""Sign-in with client credentials (the token endpoint's client authentication and rate limits), sign-out, home."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from service.auth import authenticate_client, authenticate_unknown_client, secret_version
from service.console import session as sessions
from service.console.roles import console_scopes, roles_for
from service.console.web import (
    PREFIX,
    ConsoleUser,
    SignedIn,
    audit_console,
    is_https,
    limiter,
    rejections,
    render,
    request_id,
    require_post,
    runtime,
    source,
)
from service.errors import CsrfRefused, ServiceError
from service.models import ConsoleSession
from service.validation import MAX_ID_LENGTH, has_control_chars, terminal_safe

router = APIRouter()


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site: no open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX + "/"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=sessions.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def sign_in_form(
    request: Request, *, next_path: str, message: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = sessions.new_presession_token()
    oidc_on = bool(runtime(request).settings.console_oidc_discovery)
    context = {"pre": token, "next": next_path, "message": message, "oidc": oidc_on}
    response = render(request, "sign_in.html", context, status_code=status_code)
    set_cookie(response, request, sessions.PRESESSION_COOKIE, token, max_age=3600)
    return response


# Fixed texts by code: a link cannot make the sign-in page say anything else.
SIGN_IN_REASONS = {
    "signed_out": "You are signed out.",
    "required": "Sign in to continue.",
    "expired": "Your session ended (expired, idle too long, or the client changed). Sign in again.",
}


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, next: str | None = None, why: str | None = None) -> HTMLResponse:  # noqa: A002
    return sign_in_form(request, next_path=safe_next(next), message=SIGN_IN_REASONS.get(why or ""))


@router.post("/sign-in", response_model=None)
def sign_in(
    request: Request,
    client_id: Annotated[str, Form(max_length=1024)] = "",
    client_secret: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str | None, Form()] = None,
    next: Annotated[str, Form(max_length=2000)] = "",  # noqa: A002
) -> Response:
    pre = request.cookies.get(sessions.PRESESSION_COOKIE)
    if not pre or not sessions.csrf_matches(csrf_token, pre):
        raise CsrfRefused("the sign-in form's CSRF token does not match its cookie (reload the sign-in page)")
    rt, lim, host = runtime(request), limiter(request), source(request)
    lim.hit("token.ip", host)
    lim.check("auth_failure.ip", host)  # too many failures from here: refuse before scrypt runs
    client_id = client_id.strip()
    try:
        if not client_id or not client_secret:
            authenticate_unknown_client(client_secret)
        if len(client_id) > MAX_ID_LENGTH or has_control_chars(client_id):
            authenticate_unknown_client(client_secret)
        with rt.session() as db:
            client = authenticate_client(session=db, client_id=client_id, client_secret=client_secret)
            sv, scopes, name = secret_version(client), console_scopes(client.scopes), client.name
    except ServiceError as exc:
        lim.spend("auth_failure.ip", host)
        claimed = terminal_safe(client_id, max_length=200) if client_id else None
        rejections(request).record(
            kind="auth.failed",
            source=host,
            actor=f"client:{claimed}" if claimed else f"anonymous@{host}",
            outcome="denied",
            request_id=request_id(request),
            details={"endpoint": f"{PREFIX}/sign-in", "via": "console", "code": exc.code, "message": exc.message},
        )
        return sign_in_form(
            request, next_path=safe_next(next), message="Unknown client id or wrong secret.", status_code=401
        )
    if not scopes:
        audit_console(
            request, action="console.sign_in_refused", actor=f"client:{client_id}", outcome="denied",
            details={"reason": "no console role (needs audit:read, consent:read, consent:write or detect)"},
        )  # fmt: skip
        return sign_in_form(
            request,
            next_path=safe_next(next),
            message="This client has no console role (it needs audit:read, consent:read, consent:write or detect).",
            status_code=403,
        )
    return begin_session(
        request, principal=f"client:{client_id}", name=name, via="client", scopes=scopes, next_path=next,
        client_id=client_id, sv=sv,
    )  # fmt: skip


def begin_session(
    request: Request,
    *,
    principal: str,
    name: str,
    via: str,
    scopes: frozenset[str],
    next_path: str | None,
    client_id: str | None = None,
    sv: str | None = None,
    details: dict[str, object] | None = None,
    response: Response | None = None,
) -> Response:
    """Open a session row for a principal that proved who it is, audit the sign-in, and set the cookie on
    `response` (default: a redirect to `next_path`)."""
    rt = runtime(request)
    lifetime = rt.settings.console_session_seconds
    with rt.session() as db:
        sessions.purge_old(db)
        token, row = sessions.open_session(
            db, principal=principal, name=name, via=via, scopes=scopes, lifetime_s=lifetime, client_id=client_id,
            secret_version=sv, user_agent=request.headers.get("user-agent"), source=source(request),
        )  # fmt: skip
        session_id, expires_at = row.id, row.expires_at
        db.commit()
    audit_console(
        request,
        action="console.signed_in",
        actor=principal,
        details={
            "via_method": via, "roles": roles_for(scopes), "scopes": sorted(scopes),
            "session": session_id[:16], "expires_at": int(expires_at.timestamp()), **(details or {}),
        },
    )  # fmt: skip
    response = response or RedirectResponse(safe_next(next_path), status_code=303)
    set_cookie(response, request, sessions.SESSION_COOKIE, token, lifetime)
    response.delete_cookie(sessions.PRESESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.post("/sign-out")
def sign_out(request: Request, user: Annotated[ConsoleUser, require_post(None)]) -> RedirectResponse:
    """End the session in the table (a copy of the cookie stops working too), then drop the cookie."""
    rt = runtime(request)
    with rt.session() as db:
        row = db.get(ConsoleSession, user.session_id)
        if row is not None:
            sessions.end_session(row, by=user.actor, reason="signed_out")
            db.add(row)
            db.commit()
    audit_console(request, action="console.signed_out", actor=user.actor, details={"session": user.session_id[:16]})
    response = RedirectResponse(f"{PREFIX}/sign-in?why=signed_out", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH)
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: SignedIn) -> HTMLResponse:
    return render(request, "home.html", user=user)
