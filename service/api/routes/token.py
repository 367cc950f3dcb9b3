"""OAuth2 token endpoint, client credentials grant (RFC 6749 §4.4), and its metadata (RFC 8414).

The body is parsed here rather than by FastAPI's form validation, because RFC 6749 §5.2 wants its own error
answers (400 `invalid_request`, ...) where FastAPI would answer 422.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import FormData

from service.api.deps import RequestId, RuntimeDep, SessionDep
from service.api.problems import PROBLEM_MEDIA_TYPE
from service.auth import SCOPES, authenticate_client, authenticate_unknown_client, parse_scopes
from service.errors import HINTS, ExitStatus, ServiceError, TooManyRequests
from service.ratelimit import RateLimiter
from service.validation import MAX_ID_LENGTH, has_control_chars, terminal_safe

router = APIRouter(tags=["auth"])
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenError(ServiceError):
    """An RFC 6749 §5.2 error: `code` is the `error` value; `basic` says the client tried HTTP Basic."""

    http_status = 400  # RFC 6749 §5.2; invalid_client over Basic passes status=401
    exit_status = ExitStatus.INVALID_INPUT

    def __init__(self, code: str, message: str, *, status: int = 400, basic: bool = False) -> None:
        super().__init__(message, code=code)
        self.http_status = status
        self.basic = basic


def _basic_credentials(header: str) -> tuple[str, str]:
    """Client id and secret from `Authorization: Basic` (RFC 6749 §2.3.1: both form-urlencoded before base64)."""
    try:
        raw = base64.b64decode(header.split(" ", 1)[1].strip(), validate=True).decode()
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise TokenError("invalid_client", "malformed Basic credentials", status=401, basic=True) from exc
    cid, sep, secret = raw.partition(":")
    if not sep:
        raise TokenError("invalid_client", "malformed Basic credentials", status=401, basic=True)
    return unquote_plus(cid), unquote_plus(secret)


def _single(form: FormData, name: str) -> str | None:
    """A parameter's value; RFC 6749 §3.2: an empty one counts as omitted, a repeated one is invalid_request."""
    values = form.getlist(name)
    if len(values) > 1:
        raise TokenError("invalid_request", f"parameter {name!r} is repeated")
    value = values[0] if values else None
    if value is not None and not isinstance(value, str):
        raise TokenError("invalid_request", f"parameter {name!r} must be a plain form field")
    return value or None


async def _read_form(request: Request) -> FormData:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != _FORM:
        raise TokenError(
            "invalid_request", f"the token request must be {_FORM} (RFC 6749 §4.4.2), not {ctype or 'empty'}"
        )
    return await request.form()


def _token_error_doc(description: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
            "error_uri": {"type": "string"},
            "hint": {"type": "string"},
        },
    }
    return {"description": f"RFC 6749 §5.2 error: {description}", "content": {"application/json": {"schema": schema}}}


_TOKEN_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "scope": {"type": "string", "description": "space-separated; default: all granted scopes"},
                        "client_id": {"type": "string", "description": "client_secret_post (or use HTTP Basic)"},
                        "client_secret": {"type": "string", "format": "password"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {
            "description": "RFC 6749 §5.1 access token response",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in", "scope"],
                        "properties": {
                            "access_token": {"type": "string", "description": "ES256 JWT (RFC 9068 profile)"},
                            "token_type": {"type": "string", "enum": ["Bearer"]},
                            "expires_in": {"type": "integer"},
                            "scope": {"type": "string"},
                        },
                    }
                }
            },
        },
        "400": _token_error_doc("invalid_request, unsupported_grant_type, invalid_scope, invalid_client (form)"),
        "401": _token_error_doc("invalid_client; `WWW-Authenticate: Basic` when the client used HTTP Basic"),
        "429": {
            "description": "too many token requests or failed authentications (Retry-After)",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        },
    },
}


@router.post("/v1/token", openapi_extra=_TOKEN_FORM_SCHEMA)
async def issue_token(request: Request, rt: RuntimeDep, session: SessionDep, rid: RequestId) -> JSONResponse:
    """Exchange client credentials for a short-lived ES256 JWT access token (client_secret_basic or _post)."""
    claimed = "?"
    host = request.client.host if request.client else "?"
    limiter: RateLimiter = request.app.state.limiter
    limiter.hit("token.ip", host)  # 429 before any parsing or hashing
    try:
        form = await _read_form(request)
        header = request.headers.get("authorization", "")
        basic = header.lower().startswith("basic ")
        form_id, form_secret = _single(form, "client_id"), _single(form, "client_secret")
        if basic and (form_id or form_secret):
            # RFC 6749 §2.3: a client MUST NOT use more than one authentication method in a request.
            raise TokenError("invalid_request", "send client credentials either by HTTP Basic or in the form, not both")
        client_id, secret = _basic_credentials(header) if basic else (form_id or "", form_secret or "")
        # The attempted id, whole but made safe for the audit log (an actor is at most 255 characters).
        claimed = terminal_safe(client_id, max_length=200) if client_id else "?"
        grant_type = _single(form, "grant_type")
        if grant_type is None:
            raise TokenError("invalid_request", "missing parameter 'grant_type'")
        if grant_type != "client_credentials":
            raise TokenError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported; use client_credentials"
            )
        if not client_id or not secret:
            raise TokenError(
                "invalid_client",
                "client authentication is required (HTTP Basic or client_id + client_secret)",
                status=401,
                basic=True,
            )
        scope = _single(form, "scope")
        # Too many failed authentications from this address: refuse before scrypt runs. (Not per claimed client:
        # anyone could then lock a client out by sending wrong secrets in its name.)
        limiter.check("auth_failure.ip", host)
        try:
            if len(client_id) > MAX_ID_LENGTH or has_control_chars(client_id) or len(secret) > 1024:
                # No client has such an id (PostgreSQL cannot even look up one with a NUL): the same answer, and
                # the same cost, as any unknown id.
                authenticate_unknown_client(secret)
            client = authenticate_client(session=session, client_id=client_id, client_secret=secret)
        except ServiceError as exc:
            limiter.spend("auth_failure.ip", host)
            # RFC 6749 §5.2: 401 + challenge for a client that used Basic; 400 for form credentials (as Authlib).
            raise TokenError("invalid_client", exc.message, status=401 if basic else 400, basic=basic) from exc
        limiter.hit("token.client", client.client_id)  # counted once authenticated, for the same reason
        body = rt.tokens.issue(client, parse_scopes(scope) if scope else None)
    except TooManyRequests:
        raise  # a 429 problem with Retry-After, like every other limit
    except ServiceError as exc:
        error = exc if isinstance(exc, TokenError) else TokenError(exc.code, exc.message)
        if error.code == "invalid_scope":
            error.http_status = 400
        return _token_error(request, error, claimed=claimed, rid=rid, host=host)
    rt.audit.append(
        action="auth.token_issued",
        actor=f"client:{client.client_id}",
        outcome="ok",
        request_id=rid,
        details={"scope": body["scope"]},
    )
    return JSONResponse(body, headers=_NO_STORE)


def _token_error(request: Request, error: TokenError, *, claimed: str, rid: str, host: str) -> JSONResponse:
    request.app.state.rejections.record(
        kind="auth.failed",
        source=host,
        actor=f"client:{claimed}" if claimed != "?" else f"anonymous@{host}",
        outcome="denied",
        request_id=rid,
        details={"endpoint": "/v1/token", "code": error.code, "message": error.message},
    )
    headers = dict(_NO_STORE)
    if error.http_status == 401 and error.basic:
        # RFC 6749 §5.2: a client that tried the Authorization header gets 401 with a challenge for that scheme.
        headers["WWW-Authenticate"] = 'Basic realm="provatar", charset="UTF-8"'
    body = {
        "error": error.code,
        "error_description": error.message,
        "error_uri": f"/problems/{error.code}",
        "code": error.code,
        "message": error.message,
    }
    if error.code in HINTS:
        body["hint"] = HINTS[error.code]
    return JSONResponse(body, status_code=error.http_status, headers=headers)


@router.get("/.well-known/oauth-authorization-server")
def authorization_server_metadata(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """RFC 8414 metadata. `issuer` is the `iss` of our tokens (set PROVATAR_TOKEN_ISSUER to this service's https
    URL in production so the two agree, as RFC 8414 §3.3 wants); endpoints are absolute URLs of this server."""
    base = (rt.settings.public_url or str(request.base_url)).rstrip("/")
    return {
        "issuer": rt.settings.token_issuer,
        "token_endpoint": f"{base}/v1/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": list(SCOPES),
        "service_documentation": f"{base}/docs",
    }
