"""OAuth2 client credentials (RFC 6749 §4.4) and the signed JWT access tokens the API accepts.

Tokens are ES256 JWTs made with joserfc, the JOSE library of the Authlib project (Authlib 1.7+ deprecates its
own `authlib.jose` in its favour). Tokens from an external issuer are accepted when its JWKS URL is configured.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlmodel import Session, select

from service.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from service.keys import JWT_KEY
from service.models import Client
from service.settings import Settings
from service.validation import MAX_NAME_LENGTH, check_text

SCOPES: dict[str, str] = {
    "generate": "create talking-face videos and read their status",
    "detect": "run detection on uploaded media",
    "consent:read": "list subjects, consent records and the block list",
    "consent:write": "enroll subjects, grant/revoke consent, edit the block list",
    "audit:read": "read, verify and export the audit log",
    "clients:admin": "list, create, disable and rotate API clients",
    "webhooks": "register callback URLs for this client's events and read their delivery log",
}

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def parse_scopes(scope: str | list[str] | None) -> list[str]:
    items = scope.split() if isinstance(scope, str) else list(scope or [])
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise InvalidInput(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}", code="invalid_scope")
    return sorted(set(items))


def create_client(*, session: Session, name: str, scopes: list[str]) -> tuple[Client, str]:
    """Create an API client; returns it and its secret, which is shown once and stored only as a scrypt hash."""
    check_text(name, field="the client name", max_length=MAX_NAME_LENGTH)
    if not name.strip():
        raise InvalidInput("the client name is empty", code="invalid_request")
    if session.exec(select(Client).where(Client.name == name)).first():
        raise Conflict(f"a client named {name!r} already exists", code="client_exists")
    client_id = "cl_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    client = Client(client_id=client_id, name=name, scopes=parse_scopes(scopes), secret_hash=hash_secret(secret))
    session.add(client)
    return client, secret


def secret_version(client: Client) -> str:
    """A short fingerprint of the client's current secret hash, carried in its tokens as `sv`: rotating the secret
    changes it, so tokens issued under the old secret stop verifying at once (no token table needed)."""
    return hashlib.sha256(client.secret_hash.encode()).hexdigest()[:16]


def get_client(*, session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise NotFound(f"no API client {client_id!r}", code="client_not_found")
    return client


def rotate_secret(*, session: Session, client_id: str) -> tuple[Client, str]:
    """Give the client a new secret (returned once); tokens issued under the old one stop working."""
    client = get_client(session=session, client_id=client_id)
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hash_secret(secret)
    session.add(client)
    return client, secret


def set_disabled(*, session: Session, client_id: str, disabled: bool) -> Client:
    """Disable (or re-enable) a client: a disabled client gets no tokens and its issued tokens stop verifying."""
    client = get_client(session=session, client_id=client_id)
    client.disabled = disabled
    session.add(client)
    return client


@functools.cache
def _dummy_hash() -> str:
    """A stored-hash stand-in for unknown client ids, made once: verifying against it costs exactly what verifying
    a real client's secret costs (one scrypt), so response time does not reveal which client ids exist. (Hashing a
    fresh dummy per request, as before, cost a second scrypt: unknown ids answered measurably slower.)"""
    return hash_secret(secrets.token_urlsafe(16))


def authenticate_unknown_client(client_secret: str) -> NoReturn:
    """Refuse a client id that cannot exist (too long, control characters), at the cost of a real check."""
    check_secret(client_secret, _dummy_hash())
    raise Unauthorized("invalid client credentials", code="invalid_client")


def authenticate_client(*, session: Session, client_id: str, client_secret: str) -> Client:
    client = session.get(Client, client_id)
    ok = check_secret(client_secret, client.secret_hash if client else _dummy_hash())
    if client is None or not ok or client.disabled:
        raise Unauthorized("invalid client credentials", code="invalid_client")
    return client


@dataclass(frozen=True)
class Principal:
    """Who is calling: a client id, its granted scopes, and which issuer vouched for it."""

    client_id: str
    scopes: frozenset[str]
    issuer: str
    token_id: str | None = None

    @property
    def actor(self) -> str:
        return f"client:{self.client_id}"

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope", details={"required_scope": scope})


class TokenService:
    """Issues our tokens and verifies ours and (optionally) an external issuer's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _dummy_hash()  # made now, so the first unknown client id is not the one slow answer
        self._key = ECKey.import_key(Path(settings.keys_dir / JWT_KEY).read_bytes())
        self._kid = self._key.thumbprint()
        self._external: KeySet | None = None
        self._external_fetched = 0.0
        self._lock = threading.Lock()

    def jwks(self) -> dict[str, object]:
        pub = self._key.as_dict(private=False)
        pub.update({"kid": self._kid, "use": "sig", "alg": "ES256"})
        return {"keys": [pub]}

    def issue(self, client: Client, requested: list[str] | None) -> dict[str, object]:
        granted = set(client.scopes)
        scopes = sorted(granted if not requested else set(requested))
        if not set(scopes) <= granted:
            missing = ", ".join(sorted(set(scopes) - granted))
            raise Forbidden(f"client may not request scope(s): {missing}", code="invalid_scope")
        now = int(time.time())
        claims = {
            "iss": self.settings.token_issuer,
            "aud": self.settings.token_audience,
            "sub": client.client_id,
            "client_id": client.client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.token_ttl_seconds,
            "jti": uuid.uuid4().hex,
            "sv": secret_version(client),
        }
        token = jwt.encode({"alg": "ES256", "kid": self._kid, "typ": "at+jwt"}, claims, self._key)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.settings.token_ttl_seconds,
            "scope": " ".join(scopes),
        }

    def verify(self, token: str, *, session: Session) -> Principal:
        """Verify signature, issuer, audience and lifetime; raise Unauthorized with a specific reason."""
        try:
            issuer = self._unverified_issuer(token)
            if issuer == self.settings.token_issuer:
                key: ECKey | KeySet = self._key
                audience = self.settings.token_audience
            elif self.settings.external_issuer and issuer == self.settings.external_issuer:
                key = self._external_keys()
                audience = self.settings.external_audience or self.settings.token_audience
            else:
                raise Unauthorized("token from an unknown issuer", code="invalid_token")
            decoded = jwt.decode(token, key, algorithms=["ES256", "RS256", "EdDSA"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": audience},
                exp={"essential": True},
                sub={"essential": True},
                leeway=5,
            ).validate(decoded.claims)
        except Unauthorized:
            raise
        except JoseError as exc:
            raise Unauthorized(f"invalid token: {exc.description or exc.error}", code="invalid_token") from exc
        except ValueError as exc:
            raise Unauthorized(f"malformed token: {exc}", code="invalid_token") from exc
        claims = decoded.claims
        client_id = str(claims.get("client_id") or claims["sub"])
        if issuer == self.settings.token_issuer:
            client = session.get(Client, client_id)
            if client is None or client.disabled:
                raise Unauthorized("the token's client is unknown or disabled", code="invalid_token")
            if claims.get("sv") != secret_version(client):
                raise Unauthorized("the client's secret was rotated after this token was issued", code="invalid_token")
        scope = claims.get("scope") or claims.get("scp") or ""
        scopes = frozenset(scope.split() if isinstance(scope, str) else scope)
        return Principal(client_id=client_id, scopes=scopes, issuer=issuer, token_id=claims.get("jti"))

    @staticmethod
    def _unverified_issuer(token: str) -> str:
        import base64
        import json

        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("not a JWS compact token")
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        iss = json.loads(base64.urlsafe_b64decode(payload)).get("iss")
        if not isinstance(iss, str):
            raise ValueError("no issuer claim")
        return iss

    def _external_keys(self) -> KeySet:
        with self._lock:
            if self._external is None or time.time() - self._external_fetched > 300:
                assert self.settings.external_jwks_url
                try:
                    resp = httpx.get(self.settings.external_jwks_url, timeout=5.0)
                    resp.raise_for_status()
                    self._external = KeySet.import_key_set(resp.json())
                    self._external_fetched = time.time()
                except (httpx.HTTPError, ValueError) as exc:
                    if self._external is None:
                        raise Unauthorized(
                            f"cannot fetch the external issuer's keys: {exc}", code="invalid_token"
                        ) from exc
            return self._external
