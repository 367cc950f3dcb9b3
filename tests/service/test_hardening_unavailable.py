"""Issue 14 item 4: when the database or the disk fails, clients get a 503 problem+json with Retry-After (not a
plain-text or generic 500) and /health stops saying ok.

Checked to fail on the code before the fix: a full SQLite database answered 500 internal_error and /health kept
answering 200 ok; a data dir below the free-space floor was not noticed by /health at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings


@contextmanager
def _app(settings: Settings) -> Iterator[tuple[TestClient, Runtime, tuple[str, str]]]:
    init = initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False), raise_server_exceptions=False) as client:
        yield client, rt, (str(init.admin_client_id), str(init.admin_secret))
    rt.close()


def test_full_database_is_503_problem_and_readiness_fails(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False)
    with _app(settings) as (client, rt, admin):
        assert client.get("/health").status_code == 200
        # A real SQLITE_FULL ("database or disk is full"): cap the file at the pages it has now.
        with rt.engine.connect() as conn:
            pages = conn.execute(text("PRAGMA page_count")).scalar_one()

        @event.listens_for(rt.engine, "connect")
        def _cap(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

        rt.engine.dispose()
        form = {"grant_type": "client_credentials", "scope": "generate"}
        for _ in range(200):  # every issued token is an audit entry: the free room in the last pages runs out
            r = client.post("/v1/token", data=form, auth=admin)
            if r.status_code != 200:
                break
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "database_unavailable" and int(r.headers["retry-after"]) > 0
        assert "Traceback" not in r.text and "sqlite" not in r.text.lower()  # no internals
        h = client.get("/health")
        assert h.status_code == 503 and h.headers["content-type"].startswith("application/problem+json"), h.text
        assert h.json()["checks"]["recent_failure"]["code"] == "database_unavailable"


@pytest.mark.parametrize("floor", [10**18])
def test_readiness_fails_below_the_free_space_floor(tmp_path: Path, floor: int) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False, min_free_disk_bytes=floor)
    with _app(settings) as (client, _rt, _admin):
        h = client.get("/health")
        assert h.status_code == 503, h.text
        assert h.json()["checks"]["storage"]["ok"] is False and h.json()["checks"]["database"]["ok"] is True
