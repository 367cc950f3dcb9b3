"""PROVATAR_LOG_FORMAT=json and graceful shutdown: JSON lines with request_id / generation_id (the formatter, a job's
failure line in process, and a real `provatar serve` whose log is read back), query tokens still redacted, and
SIGTERM answered by a clean stop: no new connections, `service.stopped` audited, the log flushed, exit 0."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.log_redact import REDACTED, uvicorn_log_config
from service.pipeline import create_generation, run_generation
from service.runtime import Runtime, initialize
from service.settings import Settings
from service.structured_logs import ContextIds, JsonFormatter, bind_job, log_config, request_id_var, unbind_job
from tests.service.conftest import free_port
from tests.service.test_real_server import cli_env


def _json_handler() -> tuple[logging.Handler, io.StringIO]:
    """A handler built the way log_config("json") builds them (ids, redaction, JSON)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    config = log_config("json")
    handler.addFilter(ContextIds())
    from service.log_redact import RedactTokens

    handler.addFilter(RedactTokens())
    handler.setFormatter(JsonFormatter())
    assert config["handlers"]["default"]["filters"][:2] == ["context_ids", "redact_tokens"]
    return handler, stream


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_ids_extras_tracebacks_and_no_tokens() -> None:
    handler, stream = _json_handler()
    logger = logging.getLogger("provatar.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("outside any request")
        token = request_id_var.set("req-abc")
        logger.info("GET %s", "/v1/stream?access_token=SECRET-1", extra={"attempt": 2})
        ids = bind_job("gen_0123", "req-of-the-job")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("job step failed")
        unbind_job(ids)
        logger.info("back in the request")
        request_id_var.reset(token)
    finally:
        logger.removeHandler(handler)
    first, request, job, back = _lines(stream)
    assert first["request_id"] is None and first["generation_id"] is None and first["level"] == "warning"
    assert request["request_id"] == "req-abc" and request["attempt"] == 2
    assert request["message"] == f"GET /v1/stream?access_token={REDACTED}" and "SECRET-1" not in stream.getvalue()
    assert job["generation_id"] == "gen_0123" and job["request_id"] == "req-of-the-job"
    assert "ValueError: boom" in str(job["exc_info"]) and job["logger"] == "provatar.test_json"
    assert back["request_id"] == "req-abc" and back["generation_id"] is None  # unbound after the job


def test_the_serve_config_writes_json_from_every_handler() -> None:
    config = uvicorn_log_config("json")
    assert {h["formatter"] for h in config["handlers"].values()} == {"json"}
    assert all(h["filters"][:2] == ["context_ids", "redact_tokens"] for h in config["handlers"].values())
    assert config["loggers"]["provatar"]["level"] == "INFO"
    text = uvicorn_log_config("text")
    assert "json" not in {h["formatter"] for h in text["handlers"].values()}


def test_a_jobs_log_lines_name_the_job_and_its_request(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    initialize(settings)
    rt = Runtime(settings)
    bad = tmp_path / "photo.png"
    bad.write_text("not an image")  # the run fails at input validation, before any model loads
    gen = create_generation(
        rt,
        subject_id="s",
        purpose="p",
        client_id="c",
        photo_path=bad,
        audio_path=bad,
        output_path=None,
        request_id="req-job-7",
    )
    handler, stream = _json_handler()
    logger = logging.getLogger("provatar")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the failure itself is tested elsewhere
            run_generation(rt, gen.id)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        rt.close()
    failed = [line for line in _lines(stream) if gen.id in str(line["message"])]
    assert failed and all(x["generation_id"] == gen.id and x["request_id"] == "req-job-7" for x in failed), failed


@pytest.mark.slow
def test_real_server_json_logs_and_sigterm(tmp_path: Path) -> None:
    env = {**cli_env(tmp_path / "data"), "PROVATAR_LOG_FORMAT": "json", "PROVATAR_SHUTDOWN_GRACE_SECONDS": "5"}
    init = subprocess.run([sys.executable, "-m", "service.cli", "init"], env=env, capture_output=True, timeout=300)
    assert init.returncode == 0, init.stderr
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, stdout=fh, stderr=fh
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/live", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        r = httpx.get(f"{base}/health/ready?access_token=SECRET-XYZ", headers={"X-Request-ID": "rid-json-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-json-1", r.text
        proc.send_signal(signal.SIGTERM)
        # uvicorn ends a clean SIGTERM shutdown by re-raising the signal (so supervisors see why it stopped).
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.TransportError):  # stopped accepting
        httpx.get(f"{base}/health/live", timeout=2)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one JSON object
    access = [x for x in lines if x["logger"] == "uvicorn.access" and x.get("request_id") == "rid-json-1"]
    assert len(access) == 1 and access[0]["status"] == 200, lines
    assert access[0]["path"] == f"/health/ready?access_token={REDACTED}" and "SECRET-XYZ" not in text
    messages = [x["message"] for x in lines]
    assert any("shutting down" in str(m) for m in messages) and "stopped" in messages  # flushed before exit
    settings = Settings(data_dir=tmp_path / "data")
    rt = Runtime(settings)
    try:
        assert [e.action for e in rt.audit.query(action="service.stopped", limit=10)] == ["service.stopped"]
    finally:
        rt.close()
