"""Rate limits (429 + Retry-After, in memory and in the real Redis) and the per-source summaries of repeated
auth failures in the audit log."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.test_http_rfc import assert_problem

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, tuple[str, str]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("ratelimit") / "data")
    init = initialize(settings)
    return settings, (str(init.admin_client_id), str(init.admin_secret))


@contextmanager
def _app(settings: Settings, **overrides: object) -> Iterator[TestClient]:
    rt = Runtime(settings)
    try:
        with TestClient(create_app(settings.model_copy(update=overrides), runtime=rt, start_worker=False)) as client:
            yield client
    finally:
        rt.close()


def _events(client: TestClient, action: str) -> list[dict[str, object]]:
    return [e.to_record() for e in client.app.state.runtime.audit.query(action=action, limit=10_000)]  # type: ignore[attr-defined]


def test_brute_force_on_the_token_endpoint_is_cut_off_and_summarised(
    installed: tuple[Settings, tuple[str, str]],
) -> None:
    settings, admin = installed
    with _app(settings) as client:  # defaults: 20 failed authentications per minute and address
        before = len(_events(client, "auth.failed"))
        statuses = []
        for _ in range(40):
            r = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(admin[0], "wrong"))
            statuses.append(r.status_code)
        assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 20
        assert_problem(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Even the right secret from this address waits now; from another address the client is not locked out.
        r = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=admin)
        assert r.status_code == 429 and r.headers["retry-after"]
        elsewhere = TestClient(client.app, client=("192.0.2.7", 50000))
        assert elsewhere.post("/v1/token", data={"grant_type": "client_credentials"}, auth=admin).status_code == 200
        client.app.state.rejections.flush(force=True)  # type: ignore[attr-defined]
        failed = _events(client, "auth.failed")[before:]
        summary = _events(client, "auth.failed.summary")
        assert len(failed) == 1 and failed[0]["details"]["code"] == "invalid_client"  # type: ignore[index]
        assert [s["details"]["count"] for s in summary] == [19]  # type: ignore[index]
        assert summary[0]["details"]["actors"] == {f"client:{admin[0]}": 19}  # type: ignore[index]
        limited = _events(client, "rate_limit.exceeded") + _events(client, "rate_limit.exceeded.summary")
        assert len(limited) == 2 and limited[1]["details"]["count"] == 20  # type: ignore[index]
        assert client.app.state.runtime.audit.verify().entries > 0  # type: ignore[attr-defined]


def test_submissions_are_limited_per_client_before_any_work(installed: tuple[Settings, tuple[str, str]]) -> None:
    settings, admin = installed
    with _app(settings, rate_limit_submit_per_client="2/minute") as client:
        token = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=admin).json()["access_token"]
        files = {"photo": ("p.png", b"not a photo"), "audio": ("a.wav", b"not audio")}
        data = {"subject_id": "subj_x", "purpose": "p"}
        headers = {"Authorization": f"Bearer {token}"}
        codes = [client.post("/v1/generations", data=data, files=files, headers=headers).status_code for _ in range(2)]
        assert codes == [400, 400]  # the uploads were looked at
        r = client.post("/v1/generations", data=data, files=files, headers=headers)
        assert_problem(r, 429, "rate_limited")  # refused before the uploads are decoded
        assert int(r.headers["retry-after"]) >= 1 and r.json()["scope"] == "submit.client"


def test_token_requests_are_limited_per_address(installed: tuple[Settings, tuple[str, str]]) -> None:
    settings, admin = installed
    with _app(settings, rate_limit_token_per_ip="3/minute") as client:
        ok = [client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=admin) for _ in range(3)]
        assert [r.status_code for r in ok] == [200, 200, 200]
        r = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=admin)
        assert_problem(r, 429, "rate_limited")


@pytest.fixture()
def redis_db() -> Iterator[tuple[str, str]]:
    """A Redis database number of our own (1-15) and a unique key prefix; our keys are deleted afterwards."""
    redis = pytest.importorskip("redis")
    db = random.randint(1, 15)
    client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
    try:
        client.ping()
    except redis.ConnectionError as exc:
        if os.environ.get("CI"):  # CI machines run Redis: a skip there would hide a broken backend
            raise
        pytest.skip(f"Redis not reachable: {exc}")
    prefix = f"provatar-test-{uuid.uuid4().hex[:8]}"
    try:
        yield f"{REDIS_URL}/{db}", prefix
    finally:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_redis_backend_shares_limits_across_processes(
    installed: tuple[Settings, tuple[str, str]], redis_db: tuple[str, str], tmp_path: Path
) -> None:
    import redis

    settings, admin = installed
    url, prefix = redis_db
    overrides = {"redis_url": url, "redis_key_prefix": prefix, "rate_limit_token_per_client": "3/minute"}
    # Two apps with their own limiter instances stand for two API processes behind a load balancer.
    with _app(settings, **overrides) as one, _app(settings, **overrides) as two:
        assert one.app.state.limiter.backend == "redis"  # type: ignore[attr-defined]
        body = {"grant_type": "client_credentials"}
        codes = [c.post("/v1/token", data=body, auth=admin).status_code for c in (one, two, one)]
        assert codes == [200, 200, 200]
        r = two.post("/v1/token", data=body, auth=admin)
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
    keys = [k.decode() for k in redis.Redis.from_url(url).scan_iter(f"{prefix}*")]
    assert keys and all(k.startswith(prefix) for k in keys)
