"""Console sign-in through an OIDC provider (authorization code + PKCE, state, nonce) against a small provider served
on loopback (tests/service/oidc_test_provider.py): the happy path opens a session for `oidc:<sub>` with the mapped
scopes, and each tampered step (state, nonce, signature, expiry, audience, a replayed callback, no console role) is
refused with the sign-in page and audited with the check that failed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.api.main import create_app
from service.console import session as sessions
from service.console.oidc import PENDING_COOKIE, OidcProvider, OidcRefused, scopes_from_claim
from service.models import ConsoleSession
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.oidc_test_provider import CLIENT_ID, CLIENT_SECRET, LoopbackProvider, running_provider


@dataclass
class Env:
    app: FastAPI
    rt: Runtime
    provider: LoopbackProvider


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with running_provider() as provider:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("console-oidc") / "data",
            rate_limits_enabled=False,
            external_issuer=provider.issuer,
            console_oidc_client_id=CLIENT_ID,
            console_oidc_client_secret=CLIENT_SECRET,
            console_oidc_scope_map={"compliance": ["audit:read", "consent:read"], "analysts": ["detect", "generate"]},
        )
        initialize(settings)
        rt = Runtime(settings)
        app = create_app(settings, runtime=rt, start_worker=False)
        with TestClient(app):
            yield Env(app, rt, provider)
        rt.close()


@pytest.fixture(autouse=True)
def _well_behaved(env: Env) -> Iterator[None]:
    env.provider.mode = "ok"
    env.provider.announced_issuer = None
    env.provider.user = {"sub": "alice", "name": "Alice", "roles": ["compliance"]}
    yield


def browser(env: Env) -> TestClient:
    return TestClient(env.app, follow_redirects=False)


def to_provider(c: TestClient, next_path: str = "/console/audit") -> str:
    """Start a sign-in; the URL the browser is sent to at the provider."""
    r = c.get("/console/oidc/start", params={"next": next_path})
    assert r.status_code == 303, r.text
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(PENDING_COOKIE + "="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower() and "path=/console/oidc" in cookie.lower()
    return r.headers["location"]


def back_from_provider(url: str) -> str:
    """What the provider's authorize endpoint redirects the browser to (it approves at once): path + query."""
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    back = urlsplit(r.headers["location"])
    assert back.path == "/console/oidc/callback"
    return f"{back.path}?{back.query}"


def last_refusal(env: Env) -> dict:
    with env.rt.engine.connect() as conn:
        seq = conn.execute(
            text("SELECT max(seq) FROM audit_event WHERE action = 'console.sign_in_refused'")
        ).scalar_one()
    entry = env.rt.audit.query(after_seq=seq - 1, limit=1)[0]
    return {"actor": entry.actor, "outcome": entry.outcome, **entry.details}


def test_sign_in_through_the_provider_opens_a_session_for_the_oidc_subject(env: Env) -> None:
    c = browser(env)
    assert 'id="oidc-sign-in"' in c.get("/console/sign-in").text
    url = to_provider(c)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(env.provider.issuer + "/authorize?")
    assert query["code_challenge_method"] == ["S256"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://testserver/console/oidc/callback"]
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    r = c.get(back_from_provider(url))
    assert r.status_code == 200 and 'content="0;url=/console/audit"' in r.text, r.text  # a same-site step onwards
    assert PENDING_COOKIE not in c.cookies  # one use
    assert env.provider.token_requests[-1]["code_verifier"]  # PKCE: the provider checked it
    page = c.get("/console/audit")
    assert page.status_code == 200 and "oidc:alice" in page.text
    home = c.get("/console/").text
    assert "reviewer" in home and "oidc:alice" in home
    assert c.get("/console/detect").status_code == 403  # compliance maps to audit:read + consent:read only
    with env.rt.session() as db:
        row = db.get(ConsoleSession, sessions.session_id_of(c.cookies[sessions.SESSION_COOKIE]))
        assert row is not None and row.via == "oidc" and row.principal == "oidc:alice"
        assert row.scopes == ["audit:read", "consent:read"] and row.client_id is None
    entries = env.rt.audit.query(action="console.signed_in", limit=1000)
    signed = [e for e in entries if e.actor == "oidc:alice"][-1]
    assert signed.details["issuer"] == env.provider.issuer and signed.details["via_method"] == "oidc"


def test_an_oidc_session_ends_at_sign_out_for_copies_too(env: Env) -> None:
    c = browser(env)
    c.get(back_from_provider(to_provider(c)))
    copy = browser(env)
    copy.cookies.set(sessions.SESSION_COOKIE, c.cookies[sessions.SESSION_COOKIE], path="/console")
    page = c.get("/console/")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    assert c.post("/console/sign-out", data={"csrf_token": token}).status_code == 303
    assert copy.get("/console/audit").status_code == 303


def test_a_tampered_state_is_refused_and_audited(env: Env) -> None:
    c = browser(env)
    back = back_from_provider(to_provider(c))
    r = c.get(back.replace("state=", "state=x"))
    assert r.status_code == 401 and "refused" in r.text
    assert sessions.SESSION_COOKIE not in c.cookies
    assert {"reason": "wrong_state", "outcome": "denied", "method": "oidc"}.items() <= last_refusal(env).items()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong_nonce", "wrong_nonce"),
        ("bad_signature", "bad_signature"),
        ("expired", "expired"),
        ("wrong_audience", "wrong_audience"),
    ],
)
def test_a_bad_id_token_is_refused_and_audited(env: Env, mode: str, reason: str) -> None:
    env.provider.mode = mode
    c = browser(env)
    r = c.get(back_from_provider(to_provider(c)))
    assert r.status_code == 401 and "Sign in" in r.text
    assert sessions.SESSION_COOKIE not in c.cookies
    refusal = last_refusal(env)
    assert refusal["reason"] == reason and refusal["outcome"] == "denied", refusal


def test_a_callback_replayed_in_another_browser_is_refused(env: Env) -> None:
    c = browser(env)
    back = back_from_provider(to_provider(c))
    r = browser(env).get(back)  # no pending-login cookie there (e.g. a link sent to a victim: login CSRF)
    assert r.status_code == 401 and last_refusal(env)["reason"] == "no_pending_login"
    assert c.get(back).status_code == 200  # the browser that began it still can


def test_a_user_whose_claim_maps_to_no_console_scope_is_not_signed_in(env: Env) -> None:
    env.provider.user = {"sub": "bob", "roles": ["marketing", "generate"]}
    c = browser(env)
    r = c.get(back_from_provider(to_provider(c)))
    assert r.status_code == 403 and sessions.SESSION_COOKIE not in c.cookies
    refusal = last_refusal(env)
    assert refusal["reason"] == "no_console_role" and refusal["actor"] == "oidc:bob"


def test_scope_mapping_keeps_console_scopes_only() -> None:
    mapping = {"analysts": ["detect", "generate"]}
    assert scopes_from_claim(["analysts", "audit:read", "clients:admin"], mapping)[0] == {"detect", "audit:read"}
    assert scopes_from_claim("consent:write other", {})[0] == {"consent:write"}
    assert scopes_from_claim(None, mapping)[0] == frozenset()
    assert OidcRefused("x", "y").details == {"reason": "x"}


def test_without_oidc_settings_there_is_no_oidc_sign_in(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False)
    initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False), follow_redirects=False) as c:
        assert 'id="oidc-sign-in"' not in c.get("/console/sign-in").text
        assert c.get("/console/oidc/start").status_code == 404
    rt.close()


def test_an_answer_naming_another_issuer_is_refused(env: Env) -> None:
    c = browser(env)
    back = back_from_provider(to_provider(c))
    r = c.get(back + "&iss=https%3A%2F%2Fevil.example")  # RFC 9207: the answer came from another provider
    assert r.status_code == 401 and last_refusal(env)["reason"] == "wrong_issuer"


def test_a_discovery_document_naming_another_issuer_is_refused(env: Env) -> None:
    env.provider.announced_issuer = "https://elsewhere.example"
    with pytest.raises(OidcRefused) as refused:
        OidcProvider(env.rt.settings).metadata()  # OIDC Discovery 4.3
    assert refused.value.reason == "wrong_issuer"
    env.provider.announced_issuer = None
    assert OidcProvider(env.rt.settings).metadata().issuer == env.provider.issuer
