"""HTTP by the RFCs: token endpoint errors (RFC 6749 §5.2), bearer challenges (RFC 6750 §3), problem details
(RFC 9457), authorization-server metadata (RFC 8414), the OpenAPI description, and client management."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import Cli

PROBLEM = "application/problem+json"


class Http:
    def __init__(self, client: TestClient, rt: Runtime, admin: tuple[str, str]) -> None:
        self.client, self.rt, self.admin = client, rt, admin

    def token(self, scope: str | None = None, creds: tuple[str, str] | None = None) -> str:
        data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        r = self.client.post("/v1/token", data=data, auth=creds or self.admin)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def bearer(self, scope: str | None = None, creds: tuple[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope, creds)}"}

    def actions(self, action: str) -> list[dict[str, object]]:
        return [e.to_record() for e in self.rt.audit.query(action=action, limit=1000)]


@pytest.fixture(scope="module")
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, rate_limits_enabled=False)  # limits have their own tests


@pytest.fixture(scope="module")
def http(settings: Settings) -> Iterator[Http]:
    init = initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        yield Http(client, rt, (str(init.admin_client_id), str(init.admin_secret)))
    rt.close()


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["code"] == code and body["type"] == f"/problems/{code}"
    assert body["title"] and body["detail"] and body["instance"] == r.request.url.path
    return dict(body)


# ------------------------------------------------------------------------------------------- RFC 6749 §5.2
def test_token_endpoint_errors_follow_rfc6749(http: Http) -> None:
    c = http.client
    cases = [
        ({"content": b""}, 400, "invalid_request"),  # empty body
        ({"json": {"grant_type": "client_credentials"}}, 400, "invalid_request"),  # JSON, not a form
        ({"data": {"scope": "detect"}}, 400, "invalid_request"),  # no grant_type
        ({"content": b"grant_type=client_credentials&grant_type=client_credentials"}, 400, "invalid_request"),
        ({"data": {"grant_type": "password"}}, 400, "unsupported_grant_type"),
        ({"data": {"grant_type": "client_credentials", "scope": "root"}}, 400, "invalid_scope"),
    ]
    for kwargs, status, error in cases:
        headers = {"content-type": "application/x-www-form-urlencoded"} if "content" in kwargs else {}
        r = c.post("/v1/token", auth=http.admin, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (kwargs, r.text)
        assert r.json()["error"] == error and r.json()["error_description"], r.text
        assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-store"
    # Basic with a bad secret: 401 and a Basic challenge (RFC 6749 §5.2); form credentials: 400, no challenge.
    r = c.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(http.admin[0], "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith('Basic realm="provatar"')
    r = c.post(
        "/v1/token", data={"grant_type": "client_credentials", "client_id": http.admin[0], "client_secret": "wrong"}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_client" and "www-authenticate" not in r.headers
    # No credentials at all: 401 with the scheme to use. Two methods at once: invalid_request.
    r = c.post("/v1/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
    r = c.post("/v1/token", data={"grant_type": "client_credentials", "client_id": http.admin[0]}, auth=http.admin)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    # A scope the client was not granted.
    other = c.post(
        "/v1/clients", json={"name": "detect-only", "scopes": ["detect"]}, headers=http.bearer("clients:admin")
    ).json()
    r = c.post(
        "/v1/token",
        data={"grant_type": "client_credentials", "scope": "generate"},
        auth=(other["client_id"], other["client_secret"]),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


# ------------------------------------------------------------------------------------- RFC 6750 §3, RFC 9457
def test_bearer_challenges_and_problem_details(http: Http) -> None:
    c = http.client
    r = c.get("/v1/subjects")
    body = assert_problem(r, 401, "missing_token")
    assert body["hint"] and body["message"] == body["detail"]
    assert r.headers["www-authenticate"] == 'Bearer realm="provatar"'  # no error code without credentials (§3.1)
    r = c.get("/v1/subjects", headers={"Authorization": "Bearer not.a.token"})
    assert_problem(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith(
        'Bearer realm="provatar", error="invalid_token", error_description="'
    )
    r = c.get("/v1/subjects", headers=http.bearer("detect"))
    assert_problem(r, 403, "insufficient_scope")
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="consent:read"' in challenge
    # Framework errors too: unknown route, wrong method (with Allow), invalid fields, a bad cursor.
    assert_problem(c.get("/v1/nothing-here"), 404, "not_found")
    r = c.delete("/v1/token")
    assert_problem(r, 405, "method_not_allowed")
    assert "POST" in r.headers["allow"]
    r = c.get("/v1/subjects", params={"limit": "many"}, headers=http.bearer("consent:read"))
    body = assert_problem(r, 422, "invalid_request")
    assert body["errors"] and "limit" in json.dumps(body["errors"])
    r = c.get("/v1/subjects", params={"after": "!!"}, headers=http.bearer("consent:read"))
    assert_problem(r, 400, "invalid_cursor")
    # Problem types are dereferenceable.
    r = c.get("/problems/insufficient_scope")
    assert r.status_code == 200 and r.json()["title"] == "Insufficient scope" and r.json()["hint"]


def test_authorization_server_metadata_rfc8414(http: Http) -> None:
    meta = http.client.get("/.well-known/oauth-authorization-server").json()
    assert meta["issuer"] == http.rt.settings.token_issuer
    assert meta["token_endpoint"] == "http://testserver/v1/token"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    assert "generate" in meta["scopes_supported"]
    assert http.client.get(meta["jwks_uri"]).json()["keys"]


def test_openapi_describes_oauth2_and_problem_responses(http: Http) -> None:
    spec = http.client.get("/openapi.json").json()
    flow = spec["components"]["securitySchemes"]["oauth2"]["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/v1/token" and "audit:read" in flow["scopes"]
    assert "ProblemDetails" in spec["components"]["schemas"]
    checked = 0
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/") or path == "/v1/token":
            continue
        for op in ops.values():
            assert op["security"] and list(op["security"][0]) == ["oauth2"], path
            for status in ("401", "403", "422"):
                assert PROBLEM in op["responses"][status]["content"], (path, status)
            checked += 1
    assert checked >= 15
    token_op = spec["paths"]["/v1/token"]["post"]
    assert "application/x-www-form-urlencoded" in token_op["requestBody"]["content"]
    assert "error" in token_op["responses"]["400"]["content"]["application/json"]["schema"]["properties"]
    assert PROBLEM in token_op["responses"]["429"]["content"]
    assert spec["paths"]["/v1/generations"]["post"]["security"] == [{"oauth2": ["generate"]}]


# --------------------------------------------------------------------------------------- client management
def test_client_management_api_disable_rotate_audited(http: Http) -> None:
    c = http.client
    admin = http.bearer("clients:admin")
    r = c.post("/v1/clients", json={"name": "partner", "scopes": ["generate"]}, headers=admin)
    assert r.status_code == 201, r.text
    partner = r.json()
    creds = (partner["client_id"], partner["client_secret"])
    token = http.bearer(creds=creds)
    assert c.get("/v1/generations", headers=token).status_code == 200

    listed = c.get("/v1/clients", params={"limit": 1}, headers=admin)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1 and listed.json()["next"]
    assert listed.headers["link"] == f'<{listed.json()["next"]}>; rel="next"'
    seen = []
    url: str | None = "/v1/clients?limit=1"
    while url:
        page = c.get(url, headers=admin).json()
        seen += [x["client_id"] for x in page["items"]]
        url = page["next"]
    assert partner["client_id"] in seen and len(seen) == len(set(seen))
    assert all("secret" not in json.dumps(x) for x in c.get("/v1/clients", headers=admin).json()["items"])

    # Disabled: its live token stops working, and it gets no new one.
    assert c.post(f"/v1/clients/{partner['client_id']}/disable", headers=admin).json()["disabled"] is True
    assert_problem(c.get("/v1/generations", headers=token), 401, "invalid_token")
    r = c.post("/v1/token", data={"grant_type": "client_credentials"}, auth=creds)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert c.post(f"/v1/clients/{partner['client_id']}/enable", headers=admin).status_code == 200
    token = http.bearer(creds=creds)

    # Rotated: the old secret and the tokens issued under it stop working; the new secret works.
    r = c.post(f"/v1/clients/{partner['client_id']}/rotate-secret", headers=admin)
    new_creds = (partner["client_id"], r.json()["client_secret"])
    assert_problem(c.get("/v1/generations", headers=token), 401, "invalid_token")
    assert c.post("/v1/token", data={"grant_type": "client_credentials"}, auth=creds).status_code == 401
    assert c.get("/v1/generations", headers=http.bearer(creds=new_creds)).status_code == 200

    assert_problem(c.post("/v1/clients/cl_nope/disable", headers=admin), 404, "client_not_found")
    for action in ("client.created", "client.disabled", "client.enabled", "client.secret_rotated"):
        assert any(e["details"]["client_id"] == partner["client_id"] for e in http.actions(action)), action  # type: ignore[index]


def test_client_management_cli(http: Http, cli: Cli) -> None:
    created = json.loads(cli("client", "create", "cli-made", "--scope", "detect", "--json").stdout)
    listed = json.loads(cli("client", "list", "--json").stdout)
    assert created["client_id"] in {c["client_id"] for c in listed}
    rotated = cli("client", "rotate-secret", created["client_id"], "--json")
    assert rotated.exit_code == 0
    new_secret = json.loads(rotated.stdout)["client_secret"]
    assert new_secret != created["client_secret"]
    http.token(creds=(created["client_id"], new_secret))
    assert cli("client", "disable", created["client_id"]).exit_code == 0
    r = http.client.post(
        "/v1/token", data={"grant_type": "client_credentials"}, auth=(created["client_id"], new_secret)
    )
    assert r.status_code == 401
    missing = cli("client", "disable", "cl_missing")
    assert missing.exit_code == 2 and "client_not_found" in missing.stderr
    assert any(e["actor"].startswith("cli:") for e in http.actions("client.disabled"))


# ---------------------------------------------------------------------------- a real server and a real client
@pytest.fixture(scope="module")
def live_server(http: Http, settings: Settings) -> Iterator[str]:
    """The app under uvicorn on a loopback port, in a thread (the same process, a real socket and HTTP stack)."""
    app = create_app(settings, runtime=http.rt, start_worker=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_real_server_401_challenge_and_problem_json(http: Http, live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=10) as client:
        r = client.get("/v1/generations", headers={"Authorization": "Bearer abc.def.ghi"})
        assert_problem(r, 401, "invalid_token")
        assert r.headers["www-authenticate"].startswith('Bearer realm="provatar", error="invalid_token"')
        r = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(http.admin[0], "bad"))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
        r = client.post("/v1/token", data={"grant_type": "client_credentials", "scope": "generate"}, auth=http.admin)
        token = r.json()["access_token"]
        r = client.get("/v1/generations", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["items"] == []
        r = client.get("/v1/audit/events", headers={"Authorization": f"Bearer {token}"})
        assert_problem(r, 403, "insufficient_scope")
        assert 'scope="audit:read"' in r.headers["www-authenticate"]
