"""FastAPI dependencies: the runtime, a DB session, the authenticated principal and scope checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.security import OAuth2, SecurityScopes
from sqlmodel import Session
from starlette.requests import HTTPConnection

from service.auth import SCOPES, Principal
from service.errors import Forbidden, Unauthorized
from service.runtime import Runtime
from service.validation import check_url_parts

# Described in the OpenAPI as the OAuth2 client-credentials flow, so generated clients know where to get a token.
oauth2 = OAuth2(
    flows=OAuthFlows(clientCredentials=OAuthFlowClientCredentials(tokenUrl="/v1/token", scopes=SCOPES)),
    scheme_name="oauth2",
    description="OAuth2 client credentials (RFC 6749 §4.4): POST /v1/token, then `Authorization: Bearer <token>`",
    auto_error=False,
)


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    with rt.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    security_scopes: SecurityScopes,
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    authorization: Annotated[str | None, Depends(oauth2)],
) -> Principal:
    """The caller, from its bearer token (RFC 6750 §2.1); 401 without a valid one, 403 without every scope needed."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token", code="missing_token")
    principal = rt.tokens.verify(token.strip(), session=session)
    request.state.principal = principal
    for scope in security_scopes.scopes:
        if scope not in principal.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope", details={"required_scope": scope})
    return principal


CurrentPrincipal = Annotated[Principal, Security(get_principal)]


def RequireScope(scope: str) -> Any:  # noqa: N802  (reads like the class it replaced: `RequireScope("generate")`)
    """`Annotated[Principal, RequireScope("generate")]`: the token must carry the scope (403 otherwise); the scope
    is listed on the operation in the OpenAPI."""
    return Security(get_principal, scopes=[scope])


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


RequestId = Annotated[str, Depends(request_id)]


def refuse_control_characters(conn: HTTPConnection) -> None:
    """App-wide: a NUL or other control character anywhere in the decoded path or query is a 400 problem before
    any route runs (PostgreSQL cannot even compare such a string: it used to be a 500 on every lookup)."""
    check_url_parts(conn.url.path, conn.query_params.multi_items())
