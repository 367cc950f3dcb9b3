"""API clients: list, create, disable/enable, rotate the secret. Scope `clients:admin`; every change is audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from service import client_ops
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.paging import page_body
from service.auth import Principal, get_client
from service.models import ClientPublic

router = APIRouter(prefix="/v1/clients", tags=["clients"])
Admin = Annotated[Principal, RequireScope("clients:admin")]


class ClientCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1)


class ClientWithSecret(ClientPublic):
    client_secret: str = Field(description="shown only in this response; stored as a scrypt hash")


def _public(client: Any) -> ClientPublic:
    return ClientPublic.model_validate(client, from_attributes=True)


@router.get("")
def list_clients(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    _: Admin,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Clients, oldest first; page with `after` (the `next` link)."""
    page = client_ops.list_page(rt, after=after, limit=limit)
    return page_body(request, response, page, [_public(c) for c in page.items])


@router.post("", status_code=201)
def create_client(rt: RuntimeDep, principal: Admin, rid: RequestId, body: ClientCreate) -> ClientWithSecret:
    client, secret = client_ops.create(rt, name=body.name, scopes=body.scopes, actor=principal.actor, request_id=rid)
    return ClientWithSecret(**_public(client).model_dump(), client_secret=secret)


@router.get("/{client_id}")
def get_one(session: SessionDep, _: Admin, client_id: str) -> ClientPublic:
    return _public(get_client(session=session, client_id=client_id))


@router.post("/{client_id}/disable")
def disable_client(rt: RuntimeDep, principal: Admin, rid: RequestId, client_id: str) -> ClientPublic:
    """No new tokens for this client, and the tokens it holds stop working at once."""
    return _public(client_ops.disable(rt, client_id=client_id, actor=principal.actor, request_id=rid))


@router.post("/{client_id}/enable")
def enable_client(rt: RuntimeDep, principal: Admin, rid: RequestId, client_id: str) -> ClientPublic:
    return _public(client_ops.enable(rt, client_id=client_id, actor=principal.actor, request_id=rid))


@router.post("/{client_id}/rotate-secret")
def rotate_client_secret(rt: RuntimeDep, principal: Admin, rid: RequestId, client_id: str) -> ClientWithSecret:
    """A new secret, shown once; the old secret and every token issued under it stop working."""
    client, secret = client_ops.rotate(rt, client_id=client_id, actor=principal.actor, request_id=rid)
    return ClientWithSecret(**_public(client).model_dump(), client_secret=secret)
