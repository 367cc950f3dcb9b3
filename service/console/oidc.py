"""Console sign-in through an OpenID Connect provider: the authorization-code flow with PKCE (S256), state and nonce.

The protocol only (no routes): the provider's metadata (discovery, cached), the authorization URL and the pending
login it starts, the code exchange, the id_token's verification (signature against the provider's JWKS; iss, aud,
exp, iat, nonce) and the mapping of a claim's values to provatar scopes. Every refusal is an `OidcRefused` with a
short reason code (`wrong_state`, `wrong_nonce`, `bad_signature`, `expired`, `wrong_audience`...) that the routes
audit and show as a fixed text.

The pending login (state, nonce, PKCE verifier, where to go next) waits in a cookie MACed with the console's key,
not in the database: nothing is stored for a login that is never finished.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.errors import BadSignatureError, ClaimError, ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from service.console.roles import console_scopes
from service.errors import Unauthorized
from service.settings import Settings

PENDING_COOKIE = "provatar_console_oidc"
PENDING_PATH = "/console/oidc"
PENDING_SECONDS = 600  # time to finish signing in at the provider
METADATA_SECONDS = 300  # how long discovery and JWKS answers are reused
KEY_REFETCH_SECONDS = 60  # an unknown key id fetches the JWKS again, at most this often (a rotated key, not a flood)
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]
LEEWAY_S = 30
HTTP_TIMEOUT_S = 10.0
WELL_KNOWN = "/.well-known/openid-configuration"


class OidcRefused(Unauthorized):
    """An OIDC sign-in that cannot be accepted; `reason` names the check that failed."""

    code = "oidc_refused"

    def __init__(self, reason: str, message: str, *, subject: str | None = None) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.subject = subject


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    code_verifier: str
    next_path: str
    redirect_uri: str
    started_at: int


@dataclass(frozen=True)
class OidcIdentity:
    subject: str
    name: str
    issuer: str
    scopes: frozenset[str]
    claimed: list[str]  # the raw values of the scopes claim (audited: which of them mapped to nothing)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier))."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def encode_pending(pending: PendingLogin, key: bytes) -> str:
    payload = _b64(json.dumps(asdict(pending), separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(hmac.new(key, b'oidc:' + payload.encode(), hashlib.sha256).digest())}"


def decode_pending(cookie: str | None, key: bytes, *, now: int | None = None) -> PendingLogin:
    """The pending login this browser started here; OidcRefused when there is none, it is forged, or too old."""
    at = int(time.time()) if now is None else now
    if not cookie or len(cookie) > 4096 or "." not in cookie:
        raise OidcRefused("no_pending_login", "no sign-in was started from this browser (or its cookie was lost)")
    payload, _, mac = cookie.partition(".")
    expected = _b64(hmac.new(key, b"oidc:" + payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise OidcRefused("no_pending_login", "the pending sign-in cookie is not one we made")
    try:
        pending = PendingLogin(**json.loads(_unb64(payload)))
    except (ValueError, TypeError) as exc:
        raise OidcRefused("no_pending_login", "the pending sign-in cookie is malformed") from exc
    if at - pending.started_at > PENDING_SECONDS:
        raise OidcRefused("login_too_old", "the sign-in took too long; start again")
    return pending


def scopes_from_claim(value: Any, scope_map: dict[str, list[str]]) -> tuple[frozenset[str], list[str]]:
    """Provatar console scopes for a claim's values (a list, or a space-separated string), and the raw values."""
    if isinstance(value, str):
        claimed = value.split()
    elif isinstance(value, list):
        claimed = [v for v in value if isinstance(v, str)]
    else:
        claimed = []
    granted: set[str] = set()
    for item in claimed:
        granted.update(scope_map.get(item, [item]))
    return console_scopes(granted), claimed[:50]


class OidcProvider:
    """One configured provider: cached metadata and keys, and the steps of a sign-in. Safe to share across threads."""

    def __init__(self, settings: Settings, *, http: httpx.Client | None = None) -> None:
        discovery = settings.console_oidc_discovery
        if not discovery or not settings.console_oidc_client_id:
            raise ValueError("OIDC sign-in is not configured (PROVATAR_CONSOLE_OIDC_CLIENT_ID and a provider)")
        self.settings = settings
        self.discovery_url = discovery
        self.client_id = settings.console_oidc_client_id
        secret = settings.console_oidc_client_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._http = http  # a test may pass its own; otherwise one short-lived connection per call (no pool to close)
        self._lock = threading.Lock()
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, KeySet] | None = None

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            resp = self._http.get(url) if self._http else httpx.get(url, timeout=HTTP_TIMEOUT_S)
            resp.raise_for_status()
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused("provider_unreachable", f"cannot read the provider's {what}: {exc}") from exc
        if not isinstance(data, dict):
            raise OidcRefused("provider_unreachable", f"the provider's {what} is not a JSON object")
        return data

    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata[0] > METADATA_SECONDS:
                doc = self._get_json(self.discovery_url, "discovery document")
                try:
                    meta = ProviderMetadata(
                        issuer=str(doc["issuer"]),
                        authorization_endpoint=str(doc["authorization_endpoint"]),
                        token_endpoint=str(doc["token_endpoint"]),
                        jwks_uri=str(doc["jwks_uri"]),
                    )
                except KeyError as exc:
                    raise OidcRefused("provider_unreachable", f"the discovery document lacks {exc}") from exc
                asked = self.discovery_url.removesuffix(WELL_KNOWN)
                if asked != self.discovery_url and meta.issuer.rstrip("/") != asked.rstrip("/"):
                    # OIDC Discovery §4.3: the document must name the issuer whose well-known URL we read.
                    raise OidcRefused("wrong_issuer", f"the discovery document names issuer {meta.issuer!r}")
                self._metadata = (time.monotonic(), meta)
            return self._metadata[1]

    def _key_set(self, *, refresh: bool = False) -> KeySet:
        with self._lock:
            age = time.monotonic() - self._keys[0] if self._keys else None
            stale = age is None or age > METADATA_SECONDS or (refresh and age > KEY_REFETCH_SECONDS)
        if stale:
            data = self._get_json(self.metadata().jwks_uri, "keys (JWKS)")
            try:
                keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError) as exc:
                raise OidcRefused("provider_unreachable", f"the provider's JWKS is not usable: {exc}") from exc
            with self._lock:
                self._keys = (time.monotonic(), keys)
        assert self._keys is not None
        return self._keys[1]

    def start(self, *, redirect_uri: str, next_path: str) -> tuple[str, PendingLogin]:
        """The provider's authorization URL to send the browser to, and the pending login to remember."""
        meta = self.metadata()
        pending = PendingLogin(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=secrets.token_urlsafe(48),  # 64 characters, within RFC 7636's 43..128
            next_path=next_path,
            redirect_uri=redirect_uri,
            started_at=int(time.time()),
        )
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.settings.console_oidc_request_scopes,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pkce_challenge(pending.code_verifier),
                "code_challenge_method": "S256",
            }
        )
        sep = "&" if "?" in meta.authorization_endpoint else "?"
        return f"{meta.authorization_endpoint}{sep}{query}", pending

    def finish(self, *, code: str, state: str, pending: PendingLogin, iss: str | None = None) -> OidcIdentity:
        """Check the state, exchange the code (with the PKCE verifier), verify the id_token; the signed-in identity.
        `iss` is the callback's issuer parameter (RFC 9207), checked when the provider sends it."""
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcRefused("wrong_state", "the provider's answer does not belong to the sign-in this browser began")
        if not code:
            raise OidcRefused("no_code", "the provider sent no authorization code")
        meta = self.metadata()
        if iss is not None and iss != meta.issuer:
            raise OidcRefused("wrong_issuer", "the answer names another issuer than ours (mix-up)")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.code_verifier,
            "client_id": self.client_id,
        }
        auth = (self.client_id, self._secret) if self._secret is not None else None
        try:
            post = self._http.post if self._http else httpx.post
            resp = post(
                meta.token_endpoint,
                data=form,
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=HTTP_TIMEOUT_S,
            )
            body = resp.json() if resp.content else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcRefused("provider_unreachable", f"the token endpoint did not answer: {exc}") from exc
        if resp.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise OidcRefused("code_refused", f"the token endpoint refused the code ({resp.status_code} {error})")
        return self.verify_id_token(body["id_token"], nonce=pending.nonce)

    def verify_id_token(self, token: str, *, nonce: str) -> OidcIdentity:
        meta = self.metadata()
        try:
            try:
                decoded = jwt.decode(token, self._key_set(), algorithms=ALGORITHMS)
            except BadSignatureError:
                raise
            except (ValueError, JoseError):  # no key with its kid: the provider may have rotated its keys
                decoded = jwt.decode(token, self._key_set(refresh=True), algorithms=ALGORITHMS)
            claims = decoded.claims
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": meta.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
            ).validate(claims)
        except BadSignatureError as exc:
            raise OidcRefused("bad_signature", "the id_token's signature does not verify") from exc
        except ExpiredTokenError as exc:
            raise OidcRefused("expired", "the id_token has expired") from exc
        except ClaimError as exc:
            reason = {"aud": "wrong_audience", "iss": "wrong_issuer"}.get(exc.claim, "invalid_claims")
            raise OidcRefused(reason, f"the id_token's {exc.claim!r} claim is not acceptable") from exc
        except (JoseError, ValueError) as exc:
            raise OidcRefused("invalid_token", f"the id_token is not a valid JWT: {exc}") from exc
        subject = str(claims["sub"])
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.client_id:  # OIDC Core §3.1.3.7 (5)
            raise OidcRefused("wrong_audience", "the id_token is for several audiences and not authorised for us")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise OidcRefused("wrong_nonce", "the id_token's nonce is not this sign-in's", subject=subject)
        scopes, claimed = scopes_from_claim(
            claims.get(self.settings.console_oidc_scopes_claim), self.settings.console_oidc_scope_map
        )
        name = next(
            (str(claims[k]) for k in ("name", "preferred_username", "email") if isinstance(claims.get(k), str)),
            subject,
        )
        return OidcIdentity(subject=subject, name=name, issuer=meta.issuer, scopes=scopes, claimed=claimed)
