"""Graceful shutdown of the API with its in-process worker: the lifespan's shutdown (what SIGTERM leads to under
uvicorn, tested for real in test_structured_logs.py) lets a job that is rendering finish, runs the shutdown hooks
after it, and audits `service.stopped` last."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import consent_ops
from service.api.main import create_app
from service.models import Generation, JobStatus
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import short_speech

pytestmark = pytest.mark.slow


def test_shutdown_lets_the_running_job_finish_then_runs_the_hooks(
    tmp_path: Path, example_photo: Path, example_audio: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False, shutdown_grace_seconds=300)
    init = initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[example_photo.read_bytes()],
        purposes=["shutdown"],
        clients=[],
        expires_days=1,
        evidence_sha256="e" * 64,
        actor="test",
    )
    audio = short_speech(example_audio, tmp_path / "a.wav", 2.0).read_bytes()
    app = create_app(settings, runtime=rt, start_worker=True)
    hook_saw: list[JobStatus] = []
    with TestClient(app) as client:
        token = client.post(
            "/v1/token",
            data={"grant_type": "client_credentials", "scope": "generate"},
            auth=(str(init.admin_client_id), str(init.admin_secret)),
        ).json()["access_token"]
        r = client.post(
            "/v1/generations",
            data={"subject_id": subject.id, "purpose": "shutdown"},
            files={"photo": ("p.png", example_photo.read_bytes()), "audio": ("a.wav", audio)},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 202, r.text
        gen_id = r.json()["id"]

        def status() -> JobStatus:
            with rt.session() as session:
                gen = session.get(Generation, gen_id)
                assert gen is not None
                return gen.status

        app.state.shutdown_hooks.append(lambda: hook_saw.append(status()))
        deadline = time.monotonic() + 120
        while status() != JobStatus.running:
            assert time.monotonic() < deadline and status() == JobStatus.queued, status()
            time.sleep(0.05)
    # Leaving the client ran the shutdown while the job was rendering: it was allowed to finish first.
    assert status() == JobStatus.succeeded
    assert hook_saw == [JobStatus.succeeded]  # the hooks ran after the worker had stopped
    completed = rt.audit.query(action="generation.completed", limit=10)
    stopped = rt.audit.query(action="service.stopped", limit=10)
    assert len(completed) == 1 and len(stopped) == 1 and completed[0].seq < stopped[0].seq
    rt.close()
