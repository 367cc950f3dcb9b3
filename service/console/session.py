"""Console sessions: rows in `service_console_session`, named by a random cookie, and their CSRF tokens.

The cookie holds a random 256-bit token; the table keys the session by the token's SHA-256, so reading the table
does not yield usable cookies. Every request looks the row up: signing out or an operator's `provatar console
sessions --revoke` sets `revoked_at` and the session ends at once, wherever its cookie was copied to. The idle and
absolute limits (`PROVATAR_CONSOLE_IDLE_SECONDS`, `PROVATAR_CONSOLE_SESSION_SECONDS`) are checked from the row;
`last_seen_at` is written at most once a minute per session, not on every page. Client sessions also carry the
fingerprint of the client's secret at sign-in (`sv`, as in our JWTs): the caller re-checks the client on every
request, so disabling a client or rotating its secret ends its console sessions.

CSRF tokens are bound to the session: HMAC of the session's id under a key derived from the service secret,
compared in constant time. Before a session exists (the sign-in form), a random pre-session cookie is echoed in the
form (double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

from service.errors import NotFound
from service.models import ConsoleSession

SESSION_COOKIE = "provatar_console"
PRESESSION_COOKIE = "provatar_console_pre"
COOKIE_PATH = "/console"
KEEP_ENDED = timedelta(days=30)  # how long `console sessions --all` still shows a session after it expired
TOUCH_EVERY = timedelta(seconds=60)  # how stale `last_seen_at` may get (the idle limit is minutes, not seconds)


class BadSession(Exception):
    """The cookie names no session, or one that was revoked or is past one of its lifetimes (the message says
    which)."""


class UnknownSession(NotFound):
    """An operator named a session id that does not exist (or a prefix that names more than one)."""

    code = "console_session_not_found"


def session_id_of(token: str) -> str:
    """The row id of a cookie's token (SHA-256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(text: str | None) -> str | None:
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def open_session(
    db: Session,
    *,
    principal: str,
    name: str,
    via: str,
    scopes: frozenset[str],
    lifetime_s: int,
    client_id: str | None = None,
    secret_version: str | None = None,
    user_agent: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
) -> tuple[str, ConsoleSession]:
    """A new session: returns the cookie's token (only ever held by the browser) and the row (added, not
    committed)."""
    at = _now(now)
    token = secrets.token_urlsafe(32)  # 256 random bits
    row = ConsoleSession(
        id=session_id_of(token),
        principal=principal[:300],
        name=name[:300],
        via=via,
        client_id=client_id,
        secret_version=secret_version,
        scopes=sorted(scopes),
        user_agent_sha256=fingerprint(user_agent),
        source=(source or "")[:64] or None,
        created_at=at,
        last_seen_at=at,
        expires_at=at + timedelta(seconds=lifetime_s),
    )
    db.add(row)
    return token, row


def find_session(db: Session, token: str, *, idle_s: int, now: datetime | None = None) -> ConsoleSession:
    """The live session a cookie names; BadSession when there is none, it was revoked, or it is past a limit."""
    at = _now(now)
    if not token or len(token) > 200:
        raise BadSession("malformed session cookie")
    row = db.get(ConsoleSession, session_id_of(token))
    if row is None:
        raise BadSession("no such console session")
    if row.revoked_at is not None:
        raise BadSession(f"the console session was ended ({row.revoked_reason or 'revoked'})")
    if at >= row.expires_at:
        raise BadSession("the console session expired")
    if at - row.last_seen_at >= timedelta(seconds=idle_s):
        raise BadSession("the console session was idle too long")
    return row


def touch(row: ConsoleSession, now: datetime | None = None) -> bool:
    """Restart the idle clock (the absolute expiry does not move); True when the row changed and needs a commit."""
    at = _now(now)
    if at - row.last_seen_at < TOUCH_EVERY:
        return False
    row.last_seen_at = at
    return True


def end_session(row: ConsoleSession, *, by: str, reason: str, now: datetime | None = None) -> None:
    """Mark the session ended (sign-out, revocation, its client changed); the caller commits."""
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by, row.revoked_reason = _now(now), by[:300], reason[:40]


def revoke_session(db: Session, session_id: str, *, by: str, now: datetime | None = None) -> ConsoleSession:
    """An operator ends a session by its id (the whole id, or a prefix of at least 8 characters that names one)."""
    session_id = session_id.strip().lower()
    row = db.get(ConsoleSession, session_id)
    if row is None and len(session_id) >= 8:
        matches = db.exec(select(ConsoleSession).where(col(ConsoleSession.id).startswith(session_id))).all()
        row = matches[0] if len(matches) == 1 else None
    if row is None:
        raise UnknownSession(f"no console session {session_id!r} (or the prefix names more than one)")
    end_session(row, by=by, reason="revoked", now=now)
    db.add(row)
    return row


def purge_old(db: Session, *, now: datetime | None = None) -> int:
    """Delete rows past their absolute expiry by more than KEEP_ENDED (the audit log keeps the sign-in and its end);
    the number deleted. Run at each sign-in, so the table stays the size of its recent sessions."""
    cutoff = _now(now) - KEEP_ENDED
    rows = db.exec(select(ConsoleSession).where(col(ConsoleSession.expires_at) < cutoff).limit(1000)).all()
    for row in rows:
        db.delete(row)
    return len(rows)


def list_sessions(db: Session, *, include_ended: bool = False, now: datetime | None = None) -> list[ConsoleSession]:
    """Sessions, newest first: the live ones (not revoked, not past the absolute expiry), or all of them."""
    query = select(ConsoleSession).order_by(col(ConsoleSession.created_at).desc())
    if not include_ended:
        query = query.where(col(ConsoleSession.revoked_at).is_(None), col(ConsoleSession.expires_at) > _now(now))
    return list(db.exec(query).all())


def csrf_token(session_id: str, key: bytes) -> str:
    """The token every POST form of this session must carry."""
    return hmac.new(key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_matches(sent: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing token never matches."""
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())  # type: ignore[union-attr]


def new_presession_token() -> str:
    return secrets.token_urlsafe(24)
