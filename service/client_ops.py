"""API-client operations shared by the CLI and the API: each one commits and is audited."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import col, select

from service.auth import create_client, rotate_secret, set_disabled
from service.models import Client
from service.pagination import Page, keyset_page
from service.runtime import Runtime

__all__ = ["create", "list_page", "disable", "enable", "rotate"]


def create(
    rt: Runtime, *, name: str, scopes: list[str], actor: str, request_id: str | None = None
) -> tuple[Client, str]:
    with rt.session() as session:
        session.expire_on_commit = False
        client, secret = create_client(session=session, name=name, scopes=scopes)
        session.commit()
    rt.audit.append(
        action="client.created",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"client_id": client.client_id, "scopes": client.scopes},
    )
    return client, secret


def list_page(rt: Runtime, *, after: str | None = None, limit: int = 100) -> Page[Client]:
    """Clients, oldest first."""
    with rt.session() as session:
        return keyset_page(
            session,
            select(Client),
            keys=[("created_at", col(Client.created_at)), ("client_id", col(Client.client_id))],
            after=after,
            limit=limit,
            parse={"created_at": datetime.fromisoformat},
        )


def _set_disabled(rt: Runtime, client_id: str, disabled: bool, actor: str, request_id: str | None) -> Client:
    with rt.session() as session:
        session.expire_on_commit = False
        client = set_disabled(session=session, client_id=client_id, disabled=disabled)
        session.commit()
    rt.audit.append(
        action="client.disabled" if disabled else "client.enabled",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"client_id": client_id},
    )
    return client


def disable(rt: Runtime, *, client_id: str, actor: str, request_id: str | None = None) -> Client:
    """Disable a client: no new tokens, and the tokens it holds stop working at once."""
    return _set_disabled(rt, client_id, True, actor, request_id)


def enable(rt: Runtime, *, client_id: str, actor: str, request_id: str | None = None) -> Client:
    return _set_disabled(rt, client_id, False, actor, request_id)


def rotate(rt: Runtime, *, client_id: str, actor: str, request_id: str | None = None) -> tuple[Client, str]:
    """New secret for a client (returned once); the old secret and every token issued under it stop working."""
    with rt.session() as session:
        session.expire_on_commit = False
        client, secret = rotate_secret(session=session, client_id=client_id)
        session.commit()
    rt.audit.append(
        action="client.secret_rotated",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"client_id": client_id},
    )
    return client, secret
