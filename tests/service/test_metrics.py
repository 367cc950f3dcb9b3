"""`GET /metrics` through the real app: scraped, parsed with prometheus_client's own text parser, and checked against
requests made, a job run through the job state machine, a real policy denial and a failed detection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import job_state
from service.api.main import create_app
from service.models import JobStatus
from service.pipeline import create_generation
from service.runtime import initialize
from service.settings import Settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_requests_jobs_audit_denials_and_detections(
    tmp_path: Path, example_photo: Path, example_audio: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False)
    init = initialize(settings)
    with TestClient(create_app(settings, start_worker=False)) as client:
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        token = client.post(
            "/v1/token",
            data={"grant_type": "client_credentials"},
            auth=(init.admin_client_id, init.admin_secret),  # type: ignore[arg-type]
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        assert client.get("/health").status_code == 200
        assert client.get("/v1/generations/gen_nope", headers=auth).status_code == 404
        assert client.get("/v1/generations/gen_other", headers=auth).status_code == 404
        assert client.get("/no/such/page").status_code == 404
        denied = client.post(
            "/v1/generations",
            data={"subject_id": "subj_nobody", "purpose": "ads"},
            files={"photo": ("p.png", example_photo.read_bytes()), "audio": ("a.wav", example_audio.read_bytes())},
            headers=auth,
        )
        assert denied.status_code == 403, denied.text
        reason = denied.json()["code"]
        bad = client.post("/v1/detections", files={"file": ("x.mp4", b"not a video")}, headers=auth)
        assert bad.status_code in (400, 415), bad.text

        # One job that ran (the worker's transitions, with known times) and one still waiting.
        now = datetime.now(UTC)
        paths = {"photo_path": example_photo, "audio_path": example_audio, "output_path": None}
        ran = create_generation(rt, subject_id="s", purpose="p", client_id="c", request_id="r1", **paths)
        waiting = create_generation(rt, subject_id="s", purpose="p", client_id="c", request_id="r2", **paths)
        with rt.session() as session:
            for gen, age in ((ran, 10), (waiting, 60)):
                row = session.get(type(gen), gen.id)
                row.created_at = now - timedelta(seconds=age)
                session.add(row)
            session.commit()
        assert job_state.move(rt, ran.id, JobStatus.running, started_at=now - timedelta(seconds=4)) is not None
        stages = {
            "inputs": 0.2,
            "policy": 1.5,
            "render": 4.0,
            "sign": 0.25,
            "publish": 0.05,
        }  # as run_generation audits
        rt.audit.append(
            action="generation.completed",
            actor="test",
            outcome="ok",
            details={"generation_id": ran.id, "frames": 100, "stage_seconds": stages},
        )
        assert job_state.move(rt, ran.id, JobStatus.succeeded) is not None

        scrape = client.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=")
        m = _samples(scrape.text)

        requests = "provatar_http_requests_total"
        assert _value(m, requests, method="GET", route="/v1/generations/{generation_id}", status="404") == 2
        assert _value(m, requests, method="GET", route="/health", status="200") == 1
        assert _value(m, requests, method="GET", route="<unmatched>", status="404") == 1
        assert _value(m, requests, method="POST", route="/v1/generations", status="403") == 1
        assert not any("gen_nope" in str(labels) for _, labels in m)  # ids never become label values
        count = _value(m, "provatar_http_request_duration_seconds_count", method="GET", route="/health")
        assert count == 1
        assert _value(m, "provatar_detection_duration_seconds_count", status=str(bad.status_code)) == 1

        assert _value(m, "provatar_jobs", status="queued") == 1
        assert _value(m, "provatar_jobs", status="succeeded") == 1
        assert _value(m, "provatar_jobs", status="running") == 0
        assert _value(m, "provatar_queue_depth") == 1
        assert 59 <= (_value(m, "provatar_queue_oldest_age_seconds") or 0) < 120
        assert _value(m, "provatar_job_duration_seconds_count", status="succeeded") == 1
        assert 3.5 <= (_value(m, "provatar_job_duration_seconds_sum", status="succeeded") or 0) < 30
        assert 5.5 <= (_value(m, "provatar_job_queue_wait_seconds_sum") or 0) < 30

        for stage, seconds in stages.items():
            assert _value(m, "provatar_job_stage_duration_seconds_count", stage=stage) == 1
            assert _value(m, "provatar_job_stage_duration_seconds_sum", stage=stage) == seconds
        assert _value(m, "provatar_job_stage_duration_seconds_bucket", stage="render", le="2.0") == 0
        assert _value(m, "provatar_job_stage_duration_seconds_bucket", stage="render", le="5.0") == 1
        assert _value(m, "provatar_job_frames_per_second_sum") == 25.0  # 100 frames in a 4 s render stage
        assert _value(m, "provatar_job_frames_per_second_bucket", le="20.0") == 0
        assert _value(m, "provatar_job_frames_per_second_bucket", le="25.0") == 1

        assert _value(m, "provatar_policy_denials_total", reason=reason) == 1
        assert _value(m, "provatar_audit_appends_total", action="generation.completed") == 1
        assert _value(m, "provatar_audit_appends_total", action="service.started") == 1
        size = rt.audit.checkpoint().size
        assert _value(m, "provatar_audit_log_entries") == size
        total = sum(v for (name, _), v in m.items() if name == "provatar_audit_appends_total")
        assert total == size  # init's entry included: every entry of the log counted once
        assert _value(m, "provatar_detections_total", verdict="failed") == 1  # no report for bytes of no video

        # A second scrape counts only what happened since: the audit counters do not double.
        again = _samples(client.get("/metrics").text)
        assert _value(again, "provatar_audit_appends_total", action="generation.completed") == 1
        assert _value(again, requests, method="GET", route="/metrics", status="200") == 1


def test_metrics_can_require_a_bearer_token(tmp_path: Path) -> None:
    from service.runtime import Runtime

    settings = Settings(data_dir=tmp_path, rate_limits_enabled=False, metrics_bearer_token="scrape-secret")
    initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert ok.status_code == 200 and "provatar_" in ok.text
    rt.close()


_MULTIPROCESS_SCRIPT = """
import sys
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings

rt = Runtime(Settings(data_dir=sys.argv[1]))
metrics = Metrics()
for _ in range(int(sys.argv[2])):
    metrics.observe_request(method="GET", route="/health", status=200, seconds=0.02)
text = metrics.render(rt).decode()  # every process also reads the database's figures
if sys.argv[3] == "print":
    sys.stdout.write(text)
rt.close()
"""


def test_multiprocess_mode_adds_up_request_metrics_and_never_the_database_ones(tmp_path: Path) -> None:
    """Three server processes sharing PROMETHEUS_MULTIPROC_DIR, as uvicorn/gunicorn workers do: the requests of all
    three are summed in a scrape; the database-derived figures, which every process reads, are not multiplied."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    settings = Settings(data_dir=tmp_path / "data")
    initialize(settings)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared), "PYTHONPATH": path}

    def process(requests: int, mode: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", _MULTIPROCESS_SCRIPT, str(settings.data_dir), str(requests), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    process(3, "quiet")
    process(4, "quiet")
    m = _samples(process(0, "print"))
    assert _value(m, "provatar_http_requests_total", method="GET", route="/health", status="200") == 7
    assert _value(m, "provatar_http_request_duration_seconds_count", method="GET", route="/health") == 7
    from service.runtime import Runtime

    rt = Runtime(settings)
    size = rt.audit.checkpoint().size
    rt.close()
    assert _value(m, "provatar_audit_log_entries") == size
    assert sum(v for (name, _), v in m.items() if name == "provatar_audit_appends_total") == size
    assert _value(m, "provatar_jobs", status="queued") == 0 and _value(m, "provatar_queue_depth") == 0
