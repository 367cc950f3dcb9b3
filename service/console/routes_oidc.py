"""Sign-in through the OIDC provider, when one is configured: /oidc/start sends the browser there, /oidc/callback
takes it back, checks everything (service/console/oidc.py) and opens a console session for `oidc:<sub>`.

Every refusal is audited (`console.sign_in_refused`, with the check that failed) and counts against the source
address like a wrong client secret; the page shows a fixed text, never the provider's words.
"""

from __future__ import annotations

import threading

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from service.console import oidc
from service.console.routes_auth import begin_session, safe_next, sign_in_form
from service.console.web import PREFIX, audit_console, is_https, limiter, render, runtime, session_key, source
from service.errors import NotFound

router = APIRouter()
_provider_lock = threading.Lock()

REFUSAL_TEXT = {
    "no_console_role": "Your account has no console role at this service.",
    "provider_unreachable": "The sign-in provider could not be reached. Try again later.",
    "login_too_old": "The sign-in took too long. Start again.",
}
DEFAULT_REFUSAL = "Sign-in through your organisation was refused. Start again."


def provider(request: Request) -> oidc.OidcProvider:
    """The configured provider (made once per console app); 404 when OIDC sign-in is not configured."""
    settings = runtime(request).settings
    if not settings.console_oidc_discovery:
        raise NotFound("sign-in through an OIDC provider is not configured here", code="oidc_not_configured")
    with _provider_lock:
        existing = getattr(request.app.state, "oidc_provider", None)
        if existing is None:
            existing = request.app.state.oidc_provider = oidc.OidcProvider(settings)
    return existing  # type: ignore[no-any-return]


def redirect_uri(request: Request) -> str:
    settings = runtime(request).settings
    if settings.console_oidc_redirect_uri:
        return settings.console_oidc_redirect_uri
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    if base.endswith(PREFIX):  # request.base_url of the mounted console app ends with the mount path
        base = base[: -len(PREFIX)]
    return f"{base}{PREFIX}/oidc/callback"


def _clear_pending(response: Response) -> None:
    response.delete_cookie(oidc.PENDING_COOKIE, path=oidc.PENDING_PATH)


@router.get("/oidc/start", response_model=None)
def oidc_start(request: Request, next: str | None = None) -> Response:  # noqa: A002
    lim, host = limiter(request), source(request)
    lim.hit("token.ip", host)
    lim.check("auth_failure.ip", host)
    try:
        url, pending = provider(request).start(redirect_uri=redirect_uri(request), next_path=safe_next(next))
    except oidc.OidcRefused as exc:
        return _refused(request, exc)
    response = RedirectResponse(url, status_code=303)
    # SameSite=Lax, not Strict: the provider sends the browser back with a cross-site top-level GET, which must
    # carry this cookie. It holds no authority by itself (state, nonce and verifier of one sign-in).
    response.set_cookie(
        oidc.PENDING_COOKIE, oidc.encode_pending(pending, session_key(runtime(request))), max_age=oidc.PENDING_SECONDS,
        path=oidc.PENDING_PATH, httponly=True, samesite="lax", secure=is_https(request),
    )  # fmt: skip
    return response


@router.get("/oidc/callback", response_model=None)
def oidc_callback(
    request: Request, code: str = "", state: str = "", error: str | None = None, iss: str | None = None
) -> Response:
    lim, host = limiter(request), source(request)
    lim.hit("token.ip", host)
    lim.check("auth_failure.ip", host)
    prov = provider(request)
    try:
        pending = oidc.decode_pending(request.cookies.get(oidc.PENDING_COOKIE), session_key(runtime(request)))
        if error:
            raise oidc.OidcRefused("provider_error", f"the provider answered with an error: {error[:100]}")
        identity = prov.finish(code=code[:2048], state=state[:512], pending=pending, iss=iss)
    except oidc.OidcRefused as exc:
        lim.spend("auth_failure.ip", host)
        return _refused(request, exc)
    principal = f"oidc:{identity.subject}"
    if not identity.scopes:
        return _refused(
            request,
            oidc.OidcRefused("no_console_role", "no console scope in the id_token's claim", subject=identity.subject),
            status_code=403,
            details={"claimed": identity.claimed},
        )
    # A page that moves on by itself, not a redirect: this response ends a navigation the provider's site began,
    # so a redirect onwards would go without the SameSite=Strict session cookie it sets (found by the browser test).
    next_path = safe_next(pending.next_path)
    page = render(request, "signed_in.html", {"next": next_path, "principal": principal})
    response = begin_session(
        request, principal=principal, name=identity.name, via="oidc", scopes=identity.scopes, next_path=next_path,
        details={"issuer": identity.issuer, "claimed": identity.claimed}, response=page,
    )  # fmt: skip
    _clear_pending(response)
    return response


def _refused(
    request: Request, exc: oidc.OidcRefused, *, status_code: int = 401, details: dict[str, object] | None = None
) -> Response:
    actor = f"oidc:{exc.subject}" if exc.subject else f"anonymous@{source(request)}"
    audit_console(
        request, action="console.sign_in_refused", actor=actor, outcome="denied",
        details={"method": "oidc", "reason": exc.reason, "message": exc.message, **(details or {})},
    )  # fmt: skip
    response = sign_in_form(
        request, next_path=PREFIX + "/", message=REFUSAL_TEXT.get(exc.reason, DEFAULT_REFUSAL), status_code=status_code
    )
    _clear_pending(response)
    return response
