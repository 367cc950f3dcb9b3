"""/health/live and /health/ready against real services: PostgreSQL and Redis reached through a loopback TCP relay
that the test cuts and restores (the real servers, shared with other tests, are never stopped), and an S3 bucket on
moto_server. Readiness fails naming the dependency while it is unreachable and recovers once it is back; liveness
never depends on them."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import S3Server, free_port

REDIS_DB = 12  # this suite's Redis database number


class Relay:
    """Forwards a loopback port to a real server; `cut()` closes the listener and every open connection (the
    dependency is then unreachable: connections are refused), `restore()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        try:  # wakes the thread blocked in accept() (a bare close() would leave it accepting on Linux)
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def _client(settings: Settings) -> Iterator[TestClient]:
    initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        yield client
    rt.close()


def _ready(client: TestClient) -> tuple[int, dict[str, object]]:
    r = client.get("/health/ready")
    if r.status_code != 200:
        assert r.headers["content-type"].startswith("application/problem+json") and r.headers["retry-after"]
    return r.status_code, r.json()


def test_readiness_follows_postgresql_and_redis_and_liveness_does_not(pg_url: str, tmp_path: Path) -> None:
    if not _redis_reachable():
        if os.environ.get("CI"):
            raise AssertionError("Redis is not reachable at 127.0.0.1:6379 (CI runs it)")
        pytest.skip("Redis is not reachable at 127.0.0.1:6379")
    pg, redis = Relay(("127.0.0.1", 5432)), Relay(("127.0.0.1", 6379))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{pg.port}/"),
        broker_url=f"redis://127.0.0.1:{redis.port}/{REDIS_DB}",
        rate_limits_enabled=False,
    )
    with _client(settings) as client:
        status, body = _ready(client)
        assert status == 200, body
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert set(checks) == {"database", "audit_log", "audit_witness", "storage", "broker", "models"}
        assert all(c["ok"] and c["latency_ms"] >= 0 for c in checks.values())
        assert checks["database"]["dialect"] == "postgresql" and checks["models"]["loadable"] is True
        assert client.get("/health").status_code == 200  # the old probe means ready

        redis.cut()
        status, body = _ready(client)
        assert status == 503 and body["failed"] == ["broker"], body
        assert body["checks"]["broker"]["code"] == "broker_unavailable"  # type: ignore[index]
        assert client.get("/health/live").json() == {"status": "ok"}
        redis.restore()
        assert _ready(client)[0] == 200

        pg.cut()
        status, body = _ready(client)
        assert status == 503 and "database" in body["failed"], body  # type: ignore[operator]
        assert body["checks"]["database"]["code"] == "database_unavailable"  # type: ignore[index]
        assert client.get("/health/live").status_code == 200
        both = redis.cut() or _ready(client)[1]
        assert {"database", "broker"} <= set(both["failed"])  # type: ignore[arg-type]
        pg.restore()
        redis.restore()
        status, body = _ready(client)
        assert status == 200, body
    pg.cut()
    redis.cut()


def test_readiness_follows_the_s3_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False, **s3_server.settings(bucket))
    with _client(settings) as client:
        status, body = _ready(client)
        assert status == 200 and body["checks"]["storage"]["bucket"] == bucket, body  # type: ignore[index]
        s3_server.client().delete_bucket(Bucket=bucket)  # the bucket is gone (or we lost access to it)
        status, body = _ready(client)
        assert status == 503 and body["failed"] == ["storage"], body
        assert body["checks"]["storage"]["code"] == "object_storage_unavailable"  # type: ignore[index]
        s3_server.client().create_bucket(Bucket=bucket)
        assert _ready(client)[0] == 200


def test_readiness_names_a_witness_that_lags_or_was_rolled_back(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False)
    with _client(settings) as client:
        status, body = _ready(client)
        assert status == 200, body
        witness = settings.witness_path
        lines = witness.read_bytes().splitlines(keepends=True)
        assert body["checks"]["audit_witness"]["witnessed_size"] == len(lines)  # type: ignore[index]
        rt = client.app.state.runtime  # type: ignore[attr-defined]

        witness.write_bytes(b"".join(lines[:-1]))  # the newest checkpoint was never witnessed
        status, body = _ready(client)
        assert status == 503 and body["failed"] == ["audit_witness"], body
        assert body["checks"]["audit_witness"]["code"] == "witness_lagging"  # type: ignore[index]

        witness.write_bytes(b"".join(lines))
        assert _ready(client)[0] == 200
        rt.audit.append(action="service.initialized", actor="test", outcome="ok")  # witnessed as usual
        assert _ready(client)[0] == 200
        # The database rolled back to an older state while the witness kept the newer checkpoint.
        extra = witness.read_bytes().splitlines(keepends=True)[-1]
        witness.write_bytes(witness.read_bytes() + extra.replace(b'"size":', b'"size":1', 1))
        status, body = _ready(client)
        assert status == 503 and body["checks"]["audit_witness"]["code"] == "witness_ahead", body  # type: ignore[index]
