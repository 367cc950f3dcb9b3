"""Tokens: issued tokens verify; forged, expired, wrong-audience, unknown-issuer tokens are refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlmodel import Session, SQLModel, create_engine

from service.auth import (
    TokenService,
    authenticate_client,
    check_secret,
    create_client,
    hash_secret,
    parse_scopes,
)
from service.errors import Conflict, Forbidden, InvalidInput, Unauthorized
from service.keys import create_service_keys
from service.models import Client
from service.settings import Settings


@pytest.fixture()
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path)
    create_service_keys(settings.keys_dir)
    engine = create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    SQLModel.metadata.create_all(engine, tables=[Client.__table__])  # type: ignore[attr-defined]
    with Session(engine) as session:
        client, secret = create_client(session=session, name="app", scopes=["generate", "detect"])
        session.commit()
        session.refresh(client)
        yield settings, session, client, secret
    engine.dispose()


def test_secret_hash_roundtrip_and_mismatch() -> None:
    stored = hash_secret("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert check_secret("s3cret", stored)
    assert not check_secret("s3cret!", stored)
    assert not check_secret("s3cret", "md5$abc")


def test_unknown_scope_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown scope"):
        parse_scopes("generate admin")


def test_duplicate_client_name_conflicts(env) -> None:  # type: ignore[no-untyped-def]
    _, session, _, _ = env
    with pytest.raises(Conflict):
        create_client(session=session, name="app", scopes=["detect"])


def test_client_authentication(env) -> None:  # type: ignore[no-untyped-def]
    _, session, client, secret = env
    assert authenticate_client(session=session, client_id=client.client_id, client_secret=secret).name == "app"
    with pytest.raises(Unauthorized):
        authenticate_client(session=session, client_id=client.client_id, client_secret=secret + "x")
    with pytest.raises(Unauthorized):
        authenticate_client(session=session, client_id="cl_nobody", client_secret=secret)


def test_issue_and_verify(env) -> None:  # type: ignore[no-untyped-def]
    settings, session, client, _ = env
    tokens = TokenService(settings)
    body = tokens.issue(client, None)
    assert body["token_type"] == "Bearer" and body["scope"] == "detect generate"
    principal = tokens.verify(str(body["access_token"]), session=session)
    assert principal.client_id == client.client_id
    assert principal.scopes == {"generate", "detect"}
    # A narrower token may be requested; a wider one may not.
    narrow = tokens.issue(client, ["detect"])
    assert tokens.verify(str(narrow["access_token"]), session=session).scopes == {"detect"}
    with pytest.raises(Forbidden):
        tokens.issue(client, ["audit:read"])


def _claims(settings: Settings, client_id: str, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": client_id,
        "scope": "generate",
        "iat": now,
        "exp": now + 60,
    }
    claims.update(over)
    return claims


def test_forged_expired_and_wrong_audience_tokens_are_refused(env) -> None:  # type: ignore[no-untyped-def]
    settings, session, client, _ = env
    tokens = TokenService(settings)
    forger = ECKey.generate_key("P-256")
    forged = jwt.encode({"alg": "ES256"}, _claims(settings, client.client_id), forger)
    with pytest.raises(Unauthorized, match="invalid token"):
        tokens.verify(forged, session=session)
    key = tokens._key  # the real key: only the claims are wrong below
    expired = jwt.encode({"alg": "ES256"}, _claims(settings, client.client_id, exp=int(time.time()) - 600), key)
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(expired, session=session)
    wrong_aud = jwt.encode({"alg": "ES256"}, _claims(settings, client.client_id, aud="someone-else"), key)
    with pytest.raises(Unauthorized):
        tokens.verify(wrong_aud, session=session)
    stranger = jwt.encode({"alg": "ES256"}, _claims(settings, client.client_id, iss="https://evil"), key)
    with pytest.raises(Unauthorized, match="unknown issuer"):
        tokens.verify(stranger, session=session)
    with pytest.raises(Unauthorized):
        tokens.verify("not.a.token", session=session)
    # A disabled client's still-valid token stops working at once.
    good = str(tokens.issue(client, None)["access_token"])
    client.disabled = True
    session.add(client)
    session.commit()
    with pytest.raises(Unauthorized, match="disabled"):
        tokens.verify(good, session=session)


def test_external_issuer_via_jwks(env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    settings, session, _, _ = env
    idp = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})
    jwks = {"keys": [idp.as_dict(private=False)]}
    ext = settings.model_copy(
        update={
            "external_issuer": "https://idp.example",
            "external_jwks_url": "https://idp.example/jwks.json",
            "external_audience": "provatar",
        }
    )

    class FakeResponse:
        def raise_for_status(self) -> None: ...

        def json(self) -> dict[str, object]:
            return jwks

    calls: list[str] = []
    monkeypatch.setattr("service.auth.httpx.get", lambda url, timeout: calls.append(url) or FakeResponse())
    tokens = TokenService(ext)
    now = int(time.time())
    claims = {
        "iss": "https://idp.example",
        "aud": "provatar",
        "sub": "partner-7",
        "scope": "detect",
        "iat": now,
        "exp": now + 60,
    }
    token = jwt.encode({"alg": "ES256", "kid": "idp-1"}, claims, idp)
    principal = tokens.verify(token, session=session)
    assert principal.client_id == "partner-7" and principal.scopes == {"detect"}
    assert principal.issuer == "https://idp.example"
    assert calls == ["https://idp.example/jwks.json"]
    other = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})
    with pytest.raises(Unauthorized):
        tokens.verify(jwt.encode({"alg": "ES256", "kid": "idp-1"}, claims, other), session=session)
