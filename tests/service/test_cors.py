"""CORS: off by default (no browser on another origin may call the API), and only the configured origins when on."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}


def _client(tmp_path: Path, **kw: object) -> tuple[TestClient, Runtime]:
    settings = Settings(data_dir=tmp_path, rate_limits_enabled=False, **kw)
    initialize(settings)
    rt = Runtime(settings)
    return TestClient(create_app(settings, runtime=rt, start_worker=False)), rt


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    client, rt = _client(tmp_path)
    with client:
        r = client.options("/v1/generations", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers
        r = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    rt.close()


def test_cors_allows_only_the_configured_origins(tmp_path: Path) -> None:
    client, rt = _client(tmp_path, cors_origins=["https://app.example.com"])
    with client:
        ok = client.options("/v1/generations", headers={"Origin": "https://app.example.com", **PREFLIGHT})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        r = client.get("/health", headers={"Origin": "https://app.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "Location" in r.headers["access-control-expose-headers"]
        bad = client.options("/v1/generations", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in bad.headers
    rt.close()
