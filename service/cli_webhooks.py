"""`provatar webhook add|list|remove|deliveries`: an operator's view of the clients' callback URLs (the API is
the clients' own way, under the `webhooks` scope). Audited like the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli import actor, app, emit, guarded, out, runtime, shown

webhook_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints of API clients and their delivery log.")
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("add")
def webhook_add(
    client_id: Annotated[str, typer.Argument(help="The API client the events are about (cl_...).")],
    url: Annotated[str, typer.Argument(help="Callback URL (https; see PROVATAR_WEBHOOK_* settings).")],
    event: Annotated[list[str], typer.Option("--event", "-e", help="Event to send (repeat).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Register a callback URL for a client; its signing secret is printed once."""

    def body() -> None:
        from service import webhooks  # lazily: `provatar --help` must not load the database stack

        with runtime() as rt:
            endpoint, secret = webhooks.create_endpoint(
                rt, client_id=client_id, url=url, events=event, description=None, actor=actor(), request_id=None
            )
        data = {"id": endpoint.id, "url": endpoint.url, "events": endpoint.events, "secret": secret}
        if as_json:
            emit(data, True)
        else:
            out.print(f"id: {endpoint.id}\nsecret: {secret}\nevents: {shown(' '.join(endpoint.events))}")

    guarded(body)


@webhook_app.command("list")
def webhook_list(
    client_id: Annotated[str | None, typer.Option("--client", help="Only this client's endpoints.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Active endpoints (never their secrets)."""

    def body() -> None:
        from sqlmodel import col, select

        from service.models import WebhookEndpoint

        with runtime() as rt, rt.session() as session:
            stmt = select(WebhookEndpoint).where(col(WebhookEndpoint.disabled).is_(False))
            if client_id:
                stmt = stmt.where(WebhookEndpoint.client_id == client_id)
            rows = [
                {"id": e.id, "client_id": e.client_id, "url": e.url, "events": e.events}
                for e in session.exec(stmt.order_by(col(WebhookEndpoint.created_at))).all()
            ]
        if as_json:
            emit(rows, True)
            return
        for r in rows:
            out.print(f"{shown(r['id'])}  {shown(r['client_id'])}  {shown(r['url'])}  {shown(' '.join(r['events']))}")
        if not rows:
            out.print("no webhook endpoints")

    guarded(body)


@webhook_app.command("remove")
def webhook_remove(webhook_id: Annotated[str, typer.Argument(help="wh_...")]) -> None:
    """Stop deliveries to an endpoint (its delivery log is kept)."""

    def body() -> None:
        from service import webhooks
        from service.errors import NotFound
        from service.models import WebhookEndpoint

        with runtime() as rt:
            with rt.session() as session:
                endpoint = session.get(WebhookEndpoint, webhook_id)
            if endpoint is None:
                raise NotFound(f"no webhook {webhook_id!r}", code="webhook_not_found")
            webhooks.delete_endpoint(
                rt, client_id=endpoint.client_id, endpoint_id=webhook_id, actor=actor(), request_id=None
            )
        out.print(f"removed {shown(webhook_id)}")

    guarded(body)


@webhook_app.command("deliveries")
def webhook_deliveries(
    webhook_id: Annotated[str, typer.Argument(help="wh_...")],
    limit: Annotated[int, typer.Option(help="Newest N deliveries.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """An endpoint's newest deliveries with every attempt (status code, outcome, error)."""

    def body() -> None:
        from sqlmodel import col, select

        from service.models import WebhookAttempt, WebhookDelivery

        with runtime() as rt, rt.session() as session:
            deliveries = session.exec(
                select(WebhookDelivery)
                .where(WebhookDelivery.endpoint_id == webhook_id)
                .order_by(col(WebhookDelivery.created_at).desc())
                .limit(limit)
            ).all()
            rows: list[dict[str, Any]] = []
            for d in deliveries:
                attempts = session.exec(
                    select(WebhookAttempt).where(WebhookAttempt.delivery_id == d.id).order_by(col(WebhookAttempt.id))
                ).all()
                rows.append(
                    {
                        "id": d.id,
                        "event_type": d.event_type,
                        "status": d.status.value,
                        "attempts": [a.model_dump(mode="json", exclude={"id", "delivery_id"}) for a in attempts],
                    }
                )
        if as_json:
            emit(rows, True)
            return
        for r in rows:
            tries = ", ".join(f"{a['status_code'] or '-'} {a['outcome']}" for a in r["attempts"])
            out.print(f"{shown(r['id'])}  {shown(r['event_type'])}  {shown(r['status'])}  {shown('[' + tries + ']')}")

    guarded(body)
