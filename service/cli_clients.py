"""`provatar client list|disable|enable|rotate-secret` (`client create` is in cli.py). Audited like the API."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli import actor, client_app, emit, guarded, out, runtime, shown


@client_app.command("list")
def client_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every API client with its scopes and state (never the secret)."""

    def body() -> None:
        from service import client_ops  # lazily: `provatar --help` must not load the database stack

        rows = []
        after = None
        with runtime() as rt:
            while True:
                page = client_ops.list_page(rt, after=after, limit=1000)
                rows += page.items
                if not (after := page.next_cursor):
                    break
        data = [
            {
                "client_id": c.client_id,
                "name": c.name,
                "scopes": c.scopes,
                "disabled": c.disabled,
                "created_at": c.created_at.isoformat(),
            }
            for c in rows
        ]
        if as_json:
            emit(data, True)
            return
        for c in data:
            state = "disabled" if c["disabled"] else "active"
            out.print(f"{shown(c['client_id'])}  {shown(c['name'])}  {state}  {shown(' '.join(c['scopes']))}")

    guarded(body)


@client_app.command("disable")
def client_disable(client_id: Annotated[str, typer.Argument(help="cl_...")]) -> None:
    """Disable a client: no new tokens, and its tokens stop working at once."""

    def body() -> None:
        from service import client_ops  # lazily: `provatar --help` must not load the database stack

        with runtime() as rt:
            client_ops.disable(rt, client_id=client_id, actor=actor())
        out.print(f"disabled {shown(client_id)}")

    guarded(body)


@client_app.command("enable")
def client_enable(client_id: Annotated[str, typer.Argument(help="cl_...")]) -> None:
    """Re-enable a disabled client (its old tokens stay invalid only if they expired or the secret rotated)."""

    def body() -> None:
        from service import client_ops  # lazily: `provatar --help` must not load the database stack

        with runtime() as rt:
            client_ops.enable(rt, client_id=client_id, actor=actor())
        out.print(f"enabled {shown(client_id)}")

    guarded(body)


@client_app.command("rotate-secret")
def client_rotate(
    client_id: Annotated[str, typer.Argument(help="cl_...")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Give a client a new secret (printed once); the old secret and its tokens stop working."""

    def body() -> None:
        from service import client_ops  # lazily: `provatar --help` must not load the database stack

        with runtime() as rt:
            client, secret = client_ops.rotate(rt, client_id=client_id, actor=actor())
        if as_json:
            emit({"client_id": client.client_id, "client_secret": secret}, True)
        else:
            out.print(f"client_id: {client.client_id}\nclient_secret: {secret}")

    guarded(body)
