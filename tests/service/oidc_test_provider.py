"""A tiny OpenID Connect provider for the console's sign-in tests, served by uvicorn on loopback in a thread.

Discovery, an authorize endpoint that approves at once (redirecting back with code + state), a token endpoint
that checks the client's secret, the redirect URI and the PKCE verifier before it hands out an RS256 id_token, and
the JWKS. `mode` makes it misbehave the ways a real provider or an attacker could: a wrong nonce, a signature by
another key, an expired token, another audience.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "provatar-console"
CLIENT_SECRET = "console-secret-for-tests"


@dataclass
class LoopbackProvider:
    issuer: str = ""
    mode: str = "ok"  # ok | wrong_nonce | bad_signature | expired | wrong_audience
    # True: the authorize endpoint shows a page whose "Approve" link goes back (as a real provider's login page
    # does: the navigation back then starts on the provider's site); False: it redirects back at once.
    interactive: bool = False
    announced_issuer: str | None = None  # what discovery claims the issuer is (default: the truth)
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "alice", "name": "Alice", "roles": ["compliance"]})
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    other_key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    def id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": "someone-else" if self.mode == "wrong_audience" else CLIENT_ID,
            "iat": now - (600 if self.mode == "expired" else 0),
            "exp": now + (-300 if self.mode == "expired" else 300),
            "nonce": "not-" + grant["nonce"] if self.mode == "wrong_nonce" else grant["nonce"],
            **grant["user"],
        }
        signer = self.other_key if self.mode == "bad_signature" else self.key
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, signer)

    def app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.announced_issuer or self.issuer,
                    "authorization_endpoint": f"{self.issuer}/authorize",
                    "token_endpoint": f"{self.issuer}/token",
                    "jwks_uri": f"{self.issuer}/jwks",
                    "response_types_supported": ["code"],
                    "code_challenge_methods_supported": ["S256"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        async def authorize(request: Request) -> Response:
            q = request.query_params
            if (
                q.get("client_id") != CLIENT_ID
                or q.get("code_challenge_method") != "S256"
                or "openid" not in q.get("scope", "").split()
            ):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "nonce": q["nonce"], "challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"],
                "user": dict(self.user),
            }  # fmt: skip
            back = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}"
            if self.interactive:
                return HTMLResponse(f'<!doctype html><title>Provider</title><a id="approve" href="{back}">Approve</a>')
            return RedirectResponse(back, 302)

        async def token(request: Request) -> Response:
            form = dict(await request.form())
            self.token_requests.append({k: str(v) for k, v in form.items()})
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = self.codes.pop(str(form.get("code")), None)  # a code is good once
            if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge != grant["challenge"]:
                return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
            return JSONResponse({"access_token": "unused", "token_type": "Bearer", "id_token": self.id_token(grant)})

        async def jwks(request: Request) -> Response:
            return JSONResponse({"keys": [self.key.as_dict(private=False) | {"kid": "k1", "use": "sig"}]})

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/authorize", authorize),
                Route("/token", token, methods=["POST"]),
                Route("/jwks", jwks),
            ]
        )


@contextmanager
def running_provider(host_name: str = "127.0.0.1") -> Iterator[LoopbackProvider]:
    """The provider on a free loopback port, for the duration of the block. `host_name` is the name its issuer URL
    uses: "localhost" makes it another site than a console at 127.0.0.1 (a browser treats the return as cross-site,
    as with a real provider)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    provider = LoopbackProvider(issuer=f"http://{host_name}:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(provider.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test OIDC provider did not start"
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
