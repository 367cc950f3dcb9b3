"""Webhook endpoints of the calling client: register, list, delete, ping, and the delivery log with every attempt.

Deliveries follow Standard Webhooks (headers `webhook-id`, `webhook-timestamp`, `webhook-signature`); see
service/webhooks.py for the signature, the retry schedule and the callback-URL policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import col, select

from service import webhooks
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.paging import page_body
from service.auth import Principal
from service.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEndpointPublic
from service.pagination import keyset_page

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
Owner = Annotated[Principal, RequireScope("webhooks")]


class WebhookCreate(BaseModel):
    url: str = Field(max_length=2000, examples=["https://example.com/provatar-events"])
    events: list[str] = Field(min_length=1, examples=[["generation.succeeded", "generation.failed"]])
    description: str | None = Field(None, max_length=500)


class WebhookWithSecret(WebhookEndpointPublic):
    secret: str = Field(description="`whsec_...` signing secret; shown only in this response")


def _public(endpoint: WebhookEndpoint) -> WebhookEndpointPublic:
    return WebhookEndpointPublic.model_validate(endpoint, from_attributes=True)


@router.get("/events")
def list_event_types(_: Owner) -> dict[str, str]:
    """The events an endpoint can subscribe to."""
    return webhooks.EVENTS


@router.post("", status_code=201)
def create_webhook(rt: RuntimeDep, principal: Owner, rid: RequestId, body: WebhookCreate) -> WebhookWithSecret:
    """Register a callback URL; the response carries its signing secret, once."""
    endpoint, secret = webhooks.create_endpoint(
        rt,
        client_id=principal.client_id,
        url=body.url,
        events=body.events,
        description=body.description,
        actor=principal.actor,
        request_id=rid,
    )
    return WebhookWithSecret(**_public(endpoint).model_dump(), secret=secret)


@router.get("")
def list_webhooks(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: Owner,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """This client's active endpoints, oldest first."""
    page = keyset_page(
        session,
        select(WebhookEndpoint).where(
            WebhookEndpoint.client_id == principal.client_id, col(WebhookEndpoint.disabled).is_(False)
        ),
        keys=[("created_at", col(WebhookEndpoint.created_at)), ("id", col(WebhookEndpoint.id))],
        after=after,
        limit=limit,
        parse={"created_at": datetime.fromisoformat},
    )
    return page_body(request, response, page, [_public(e) for e in page.items])


@router.get("/{webhook_id}")
def get_webhook(rt: RuntimeDep, principal: Owner, webhook_id: str) -> WebhookEndpointPublic:
    return _public(webhooks.get_endpoint(rt, client_id=principal.client_id, endpoint_id=webhook_id))


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(rt: RuntimeDep, principal: Owner, rid: RequestId, webhook_id: str) -> Response:
    """Stop deliveries to this endpoint (pending ones are dropped); its delivery log stays readable to audit."""
    webhooks.delete_endpoint(
        rt, client_id=principal.client_id, endpoint_id=webhook_id, actor=principal.actor, request_id=rid
    )
    return Response(status_code=204)


@router.post("/{webhook_id}/ping", status_code=202)
def ping_webhook(request: Request, rt: RuntimeDep, principal: Owner, webhook_id: str) -> dict[str, str]:
    """Queue a signed `webhook.ping` delivery to this endpoint, to test the receiver."""
    endpoint = webhooks.get_endpoint(rt, client_id=principal.client_id, endpoint_id=webhook_id)
    delivery_id = webhooks.enqueue_to(rt, endpoint=endpoint, event_type="webhook.ping", data={"webhook_id": webhook_id})
    request.app.state.dispatcher.notify()
    return {"delivery_id": delivery_id}


@router.get("/{webhook_id}/deliveries")
def list_deliveries(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    session: SessionDep,
    principal: Owner,
    webhook_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Deliveries to this endpoint, newest first, each with its attempts (time, status code, outcome, error)."""
    webhooks.get_endpoint(rt, client_id=principal.client_id, endpoint_id=webhook_id)
    page = keyset_page(
        session,
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == webhook_id),
        keys=[("created_at", col(WebhookDelivery.created_at)), ("id", col(WebhookDelivery.id))],
        after=after,
        limit=limit,
        descending=True,
        parse={"created_at": datetime.fromisoformat},
    )
    ids = [d.id for d in page.items]
    attempts: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for a in session.exec(
        select(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids)).order_by(col(WebhookAttempt.id))
    ).all():
        attempts[a.delivery_id].append(a.model_dump(mode="json", exclude={"id", "delivery_id"}))
    items = [{**d.model_dump(mode="json"), "attempts": attempts[d.id]} for d in page.items]
    return page_body(request, response, page, items)
