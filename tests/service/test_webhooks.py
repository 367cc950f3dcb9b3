"""Webhooks end to end: a real HTTP receiver on loopback gets Standard-Webhooks-signed deliveries of a real
generation's events, verified with the independent `standardwebhooks` library; a first 500 is retried with
backoff; every attempt is in the delivery log; callback URLs outside the allowed networks are refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from service import consent_ops
from service.api.main import create_app
from service.errors import InvalidInput
from service.jobs import Worker
from service.runtime import Runtime, initialize
from service.settings import Settings
from service.webhooks import check_url
from tests.service.conftest import short_speech
from tests.service.test_http_rfc import assert_problem

pytestmark = pytest.mark.slow


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers POST /flaky with 500 the first time and 200 after; /down always with 500; /ok with 204."""

    url: str
    received: list[Received] = field(default_factory=list)

    def wait_for(self, n: int, path: str, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.received if r.path == path]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len([r for r in self.received if r.path == path])} of {n} deliveries")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")
    flaky_seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
            msg_id = self.headers["webhook-id"]
            if self.path == "/down" or (self.path == "/flaky" and msg_id not in flaky_seen):
                flaky_seen.add(msg_id)
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"try again later")
                return
            self.send_response(204 if self.path == "/ok" else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Env:
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]

    def bearer(self, scope: str, creds: tuple[str, str] | None = None) -> dict[str, str]:
        r = self.client.post(
            "/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=creds or self.admin
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def register(self, url: str, events: list[str]) -> dict[str, str]:
        r = self.client.post("/v1/webhooks", json={"url": url, "events": events}, headers=self.bearer("webhooks"))
        assert r.status_code == 201, r.text
        return dict(r.json())

    def deliveries(self, webhook_id: str) -> list[dict[str, object]]:
        r = self.client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=self.bearer("webhooks"))
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("webhooks") / "data",
        rate_limits_enabled=False,
        webhook_allow_http=True,  # the loopback receiver speaks plain http
        webhook_allowed_networks=["127.0.0.1/32"],  # ... on loopback, which only this test may target
        webhook_retry_base_seconds=0.5,
        webhook_max_attempts=3,
        webhook_poll_seconds=0.05,
    )
    init = initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        yield Env(client, rt, (str(init.admin_client_id), str(init.admin_secret)))
    rt.close()


def test_generation_events_are_signed_retried_and_logged(
    env: Env, receiver: Receiver, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    hook = env.register(f"{receiver.url}/flaky", ["generation.succeeded", "generation.failed", "consent.revoked"])
    assert hook["secret"].startswith("whsec_") and "secret" not in json.dumps(
        env.client.get(f"/v1/webhooks/{hook['id']}", headers=env.bearer("webhooks")).json()
    )
    subject, _ = consent_ops.enroll(
        env.rt,
        name="Eileen",
        photos=[example_photo.read_bytes()],
        purposes=["hooks"],
        clients=[],
        expires_days=1,
        evidence_sha256="d" * 64,
        actor="test",
    )
    audio = short_speech(example_audio, tmp_path / "a.wav", 1.0)
    r = env.client.post(
        "/v1/generations",
        data={"subject_id": subject.id, "purpose": "hooks"},
        files={"photo": ("p.png", example_photo.read_bytes()), "audio": ("a.wav", audio.read_bytes())},
        headers=env.bearer("generate"),
    )
    assert r.status_code == 202, r.text
    gen_id = r.json()["id"]
    assert Worker(env.rt).run_pending() == 1

    first, second = receiver.wait_for(2, "/flaky")[:2]
    # The same message both times (receivers deduplicate on webhook-id), each attempt signed afresh.
    assert first.headers["webhook-id"] == second.headers["webhook-id"] and first.body == second.body
    assert second.at - first.at >= 0.45  # backoff before the retry
    verifier = Webhook(hook["secret"])
    for got in (first, second):
        payload = verifier.verify(got.body, got.headers)
        assert payload["type"] == "generation.succeeded" and payload["data"]["generation_id"] == gen_id
        assert got.headers["webhook-signature"].startswith("v1,")
    with pytest.raises(WebhookVerificationError):
        verifier.verify(second.body.replace(b"succeeded", b"failed!!!"), second.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(second.body, second.headers)  # another secret

    deadline = time.monotonic() + 10
    while (log := env.deliveries(hook["id"]))[0]["status"] != "succeeded":
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    delivery = log[0]
    assert delivery["event_type"] == "generation.succeeded" and delivery["attempts"] and delivery["delivered_at"]
    attempts = delivery["attempts"]
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in attempts] == [  # type: ignore[union-attr]
        (1, 500, "http_error"),
        (2, 200, "ok"),
    ]
    assert attempts[0]["error"] == "try again later"  # type: ignore[index]

    # Consent revoked: the client that generated with the subject hears of it.
    r = env.client.post(
        f"/v1/subjects/{subject.id}/revoke", data={"reason": "withdrawn"}, headers=env.bearer("consent:write")
    )
    assert r.status_code == 200
    revoked = [
        json.loads(x.body) for x in receiver.wait_for(4, "/flaky") if json.loads(x.body)["type"] == "consent.revoked"
    ]
    assert revoked and revoked[0]["data"]["subject_id"] == subject.id


def test_an_endpoint_that_keeps_failing_is_given_up_after_max_attempts(env: Env, receiver: Receiver) -> None:
    hook = env.register(f"{receiver.url}/down", ["generation.failed"])
    r = env.client.post(f"/v1/webhooks/{hook['id']}/ping", headers=env.bearer("webhooks"))
    assert r.status_code == 202
    got = receiver.wait_for(3, "/down")
    assert got[2].at - got[1].at >= 0.95 >= got[1].at - got[0].at - 0.1  # 0.5 s, then 1.0 s
    deadline = time.monotonic() + 10
    while (delivery := env.deliveries(hook["id"])[0])["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 3  # type: ignore[arg-type]
    time.sleep(1.5)
    assert len([x for x in receiver.received if x.path == "/down"]) == 3  # no fourth attempt


def test_endpoint_management_is_per_client_and_audited(env: Env, receiver: Receiver) -> None:
    hook = env.register(f"{receiver.url}/ok", ["generation.succeeded"])
    other = env.client.post(
        "/v1/clients", json={"name": "hook-other", "scopes": ["webhooks"]}, headers=env.bearer("clients:admin")
    ).json()
    theirs = env.bearer("webhooks", creds=(other["client_id"], other["client_secret"]))
    assert_problem(env.client.get(f"/v1/webhooks/{hook['id']}", headers=theirs), 404, "webhook_not_found")
    assert env.client.get("/v1/webhooks", headers=theirs).json()["items"] == []
    ids = [h["id"] for h in env.client.get("/v1/webhooks", headers=env.bearer("webhooks")).json()["items"]]
    assert hook["id"] in ids
    assert env.client.delete(f"/v1/webhooks/{hook['id']}", headers=env.bearer("webhooks")).status_code == 204
    assert_problem(
        env.client.get(f"/v1/webhooks/{hook['id']}", headers=env.bearer("webhooks")), 404, "webhook_not_found"
    )
    actions = {e.action for e in env.rt.audit.query(limit=10_000) if e.action.startswith("webhook.")}
    assert {"webhook.created", "webhook.deleted"} <= actions
    r = env.client.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/ok", "events": ["no.such"]}, headers=env.bearer("webhooks")
    )
    assert_problem(r, 400, "invalid_request")


def test_callback_urls_outside_the_policy_are_refused(env: Env) -> None:
    for url in ("ftp://example.com/x", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://[::1]/"):
        r = env.client.post(
            "/v1/webhooks", json={"url": url, "events": ["generation.succeeded"]}, headers=env.bearer("webhooks")
        )
        assert_problem(r, 400, "invalid_webhook_url")
    strict = Settings(data_dir=Path("/nonexistent"))  # the defaults: https only, public addresses only
    for url in ("http://127.0.0.1:8000/hook", "https://127.0.0.1/hook", "https://localhost/hook", "https://u:p@x.org/"):
        with pytest.raises(InvalidInput) as refused:
            check_url(url, strict)
        assert refused.value.code == "invalid_webhook_url"
    internal = strict.model_copy(update={"webhook_allowed_networks": ["127.0.0.0/8"]})
    assert check_url("https://127.0.0.1/hook", internal) == ["127.0.0.1"]


def test_webhook_cli(env: Env, receiver: Receiver) -> None:
    from typer.testing import CliRunner

    from tests.service.conftest import Cli

    cli = Cli(
        CliRunner(),
        {
            "PROVATAR_DATA_DIR": str(env.rt.settings.data_dir),
            "PROVATAR_WEBHOOK_ALLOW_HTTP": "true",
            "PROVATAR_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
        },
    )
    added = cli("webhook", "add", env.admin[0], f"{receiver.url}/ok", "--event", "generation.failed", "--json")
    assert added.exit_code == 0, added.stderr
    hook = json.loads(added.stdout)
    assert hook["secret"].startswith("whsec_")
    listed = json.loads(cli("webhook", "list", "--client", env.admin[0], "--json").stdout)
    assert hook["id"] in {h["id"] for h in listed} and all("secret" not in h for h in listed)
    r = env.client.post(f"/v1/webhooks/{hook['id']}/ping", headers=env.bearer("webhooks"))
    assert r.status_code == 202
    deadline = time.monotonic() + 10
    while (
        not (rows := json.loads(cli("webhook", "deliveries", hook["id"], "--json").stdout))
        or rows[0]["status"] == "pending"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert rows[0]["status"] == "succeeded" and rows[0]["attempts"][0]["status_code"] == 204
    assert cli("webhook", "remove", hook["id"]).exit_code == 0
    assert hook["id"] not in {h["id"] for h in json.loads(cli("webhook", "list", "--json").stdout)}
    refused = cli("webhook", "add", env.admin[0], "http://10.1.2.3/x", "--event", "generation.failed")
    assert refused.exit_code == 2 and "invalid_webhook_url" in refused.stderr
    assert cli("webhook", "remove", "wh_missing").exit_code == 2
