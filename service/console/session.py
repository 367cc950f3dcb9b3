"""The console's session cookie and CSRF tokens.

A session is a signed cookie (HMAC-SHA256 under a key derived from the service secret), not a table: the console
adds no state to the database, and any replica of the service can check it. It carries the client id, the
fingerprint of the client's secret at sign-in (`sv`, as in our JWTs) and its lifetimes; the caller re-checks the
client on every request, so disabling a client or rotating its secret ends its console sessions at once. Signing out
deletes the cookie; a copy taken before that (it is HttpOnly, SameSite=Strict, Secure over HTTPS) stays valid
until it expires (`PROVATAR_CONSOLE_SESSION_SECONDS`, idle limit `PROVATAR_CONSOLE_IDLE_SECONDS`).

CSRF tokens are bound to the session: HMAC of the session's random nonce, compared in constant time. Before a
session exists (the sign-in form), a random pre-session cookie is echoed in the form (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass

SESSION_COOKIE = "provatar_console"
PRESESSION_COOKIE = "provatar_console_pre"
COOKIE_PATH = "/console"


class BadSession(Exception):
    """The cookie is malformed, forged, or past one of its lifetimes (the message says which)."""


@dataclass(frozen=True)
class SessionClaims:
    client_id: str
    sv: str  # fingerprint of the client's secret when it signed in (service.auth.secret_version)
    nonce: str  # random; the CSRF token is derived from it
    issued_at: int
    last_seen: int
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_claims(*, client_id: str, sv: str, lifetime_s: int, now: int | None = None) -> SessionClaims:
    at = int(time.time()) if now is None else now
    return SessionClaims(client_id, sv, secrets.token_urlsafe(16), at, at, at + lifetime_s)


def touched(claims: SessionClaims, now: int | None = None) -> SessionClaims:
    """The same session seen again now (the idle clock restarts; the absolute expiry does not move)."""
    at = int(time.time()) if now is None else now
    return SessionClaims(claims.client_id, claims.sv, claims.nonce, claims.issued_at, at, claims.expires_at)


def encode_session(claims: SessionClaims, key: bytes) -> str:
    payload = _b64(json.dumps(asdict(claims), separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def decode_session(cookie: str, key: bytes, *, idle_s: int, now: int | None = None) -> SessionClaims:
    """The claims of a cookie we signed that is still within both lifetimes; BadSession otherwise."""
    at = int(time.time()) if now is None else now
    payload, sep, mac = cookie.partition(".")
    if not sep or len(cookie) > 4096:
        raise BadSession("malformed session cookie")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise BadSession("session cookie signature is not valid")
    try:
        claims = SessionClaims(**json.loads(_unb64(payload)))
    except (ValueError, TypeError) as exc:
        raise BadSession("session cookie payload is malformed") from exc
    if at >= claims.expires_at:
        raise BadSession("the console session expired")
    if at - claims.last_seen >= idle_s:
        raise BadSession("the console session was idle too long")
    return claims


def csrf_token(claims: SessionClaims, key: bytes) -> str:
    """The token every POST form of this session must carry."""
    return _b64(hmac.new(key, b"csrf:" + claims.nonce.encode(), hashlib.sha256).digest())


def csrf_matches(sent: str | None, expected: str) -> bool:
    """Constant-time comparison; a missing token never matches."""
    return bool(sent) and hmac.compare_digest(sent.encode(), expected.encode())  # type: ignore[union-attr]


def new_presession_token() -> str:
    return secrets.token_urlsafe(24)
