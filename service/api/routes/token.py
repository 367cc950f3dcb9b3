"""OAuth2 token endpoint, client credentials grant (RFC 6749 §4.4); client auth by HTTP Basic or form fields."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from service.api.deps import RequestId, RuntimeDep, SessionDep
from service.auth import authenticate_client, parse_scopes
from service.errors import ServiceError, describe

router = APIRouter(tags=["auth"])


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:]).decode()
        cid, _, secret = raw.partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return cid, secret


@router.post("/v1/token")
def issue_token(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    rid: RequestId,
    grant_type: Annotated[str, Form()],
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    scope: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """Exchange client credentials for a short-lived ES256 JWT access token."""
    try:
        if grant_type != "client_credentials":
            raise ServiceError("only grant_type=client_credentials is supported", code="unsupported_grant_type")
        creds = _basic_credentials(request) or (client_id or "", client_secret or "")
        client = authenticate_client(session=session, client_id=creds[0], client_secret=creds[1])
        body = rt.tokens.issue(client, parse_scopes(scope) if scope else None)
    except ServiceError as exc:
        problem = describe(exc)
        status = 400 if exc.code in ("unsupported_grant_type", "invalid_scope") else problem.http_status
        rt.audit.append(
            action="auth.failed",
            actor=f"client:{(client_id or _basic_credentials(request) or ('?',))[0]}",
            outcome="denied",
            request_id=rid,
            details={"endpoint": "/v1/token", "code": exc.code, "message": exc.message},
        )
        # RFC 6749 §5.2 error body, plus our code/message for humans.
        return JSONResponse(
            {"error": exc.code, "error_description": exc.message, "code": exc.code, "message": exc.message},
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )
    rt.audit.append(
        action="auth.token_issued",
        actor=f"client:{client.client_id}",
        outcome="ok",
        request_id=rid,
        details={"scope": body["scope"]},
    )
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
