"""FastAPI dependencies: the runtime, a DB session, the authenticated principal and scope checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from service.auth import Principal
from service.errors import Forbidden, Unauthorized
from service.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /v1/token")


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    with rt.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token", code="missing_token")
    principal = rt.tokens.verify(creds.credentials, session=session)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RequireScope:
    """`Depends(RequireScope("generate"))`: the caller's token must carry the scope (403 otherwise)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def __call__(self, principal: CurrentPrincipal) -> Principal:
        if self.scope not in principal.scopes:
            raise Forbidden(f"this token lacks the {self.scope!r} scope", details={"required_scope": self.scope})
        return principal


def request_id(request: Request) -> str:
    rid: str = request.state.request_id
    return rid


RequestId = Annotated[str, Depends(request_id)]
