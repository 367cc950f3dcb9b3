"""`provatar console sessions [--all] [--revoke ID]`: an operator lists browser console sessions and ends one (its
cookie stops working at once, wherever it was copied). Audited like the console's own sign-out."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli import actor, app, emit, guarded, out, runtime, shown

console_app = typer.Typer(no_args_is_help=True, help="The browser console (/console).")
app.add_typer(console_app, name="console")


@console_app.command("sessions")
def console_sessions(
    revoke: Annotated[str | None, typer.Option("--revoke", help="end this session (its id, or 8+ first chars)")] = None,
    include_ended: Annotated[bool, typer.Option("--all", help="also signed-out, revoked and expired ones")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Live console sessions, newest first (who, how signed in, scopes, last seen, expiry); --revoke ends one."""

    def body() -> None:
        from service.console import session as sessions  # lazily: `provatar --help` must not load the database

        with runtime() as rt:
            if revoke is not None:
                with rt.session() as db:
                    row = sessions.revoke_session(db, revoke, by=actor())
                    session_id, principal = row.id, row.principal
                    db.commit()
                rt.audit.append(
                    action="console.session_revoked", actor=actor(), outcome="ok",
                    details={"session": session_id[:16], "principal": principal, "via": "cli"},
                )  # fmt: skip
                out.print(f"revoked console session {session_id[:16]} of {shown(principal)}")
                return
            with rt.session() as db:
                rows = sessions.list_sessions(db, include_ended=include_ended)
                data = [
                    {
                        "id": r.id, "principal": r.principal, "name": r.name, "via": r.via, "scopes": r.scopes,
                        "created_at": r.created_at.isoformat(), "last_seen_at": r.last_seen_at.isoformat(),
                        "expires_at": r.expires_at.isoformat(),
                        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                        "revoked_reason": r.revoked_reason,
                    }
                    for r in rows
                ]  # fmt: skip
        if as_json:
            emit(data, True)
            return
        if not data:
            out.print("no console sessions")
        for d in data:
            state = f"ended ({d['revoked_reason']})" if d["revoked_at"] else f"until {d['expires_at']}"
            out.print(
                f"{d['id'][:16]}  {shown(d['principal'])}  {d['via']}  {shown(' '.join(d['scopes']))}  "
                f"last seen {d['last_seen_at']}  {state}"
            )

    guarded(body)
