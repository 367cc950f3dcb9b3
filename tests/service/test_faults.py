"""Issue 14 item 6: fault tests with their expected outcomes.

- A `provatar generate` process killed with SIGKILL mid-render: its job is failed by the reaper (`lease_expired`),
  never finished later into the user's `-o` path; a file that was already at the `-o` path survives byte for byte.
- A database lock held by another session during an API request (SQLite BEGIN EXCLUSIVE; PostgreSQL LOCK TABLE):
  a 503 problem+json with Retry-After after one bounded lock wait (not a hang, not a 500), and the service answers
  normally again once the lock is released. Before: PostgreSQL waited forever (no lock_timeout), and on SQLite the
  refusal's own audit append waited out the busy timeout a second time (60 s).
- Read-only and full output directories are covered by test_hardening_outputs.py (read-only dir, `-o` naming a
  directory, an output dir that cannot be created) and test_hardening_unavailable.py (a full SQLite database, the
  free-space floor); the case added here is a real full filesystem (a 1 MiB tmpfs) under the `-o` path.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import consent_ops
from service.db import LOCK_WAIT_SECONDS
from service.models import Generation, JobStatus
from service.reaper import reap_expired_leases
from service.run_files import PART_GLOBS
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import short_speech
from tests.service.test_real_server import cli_env

pytestmark = pytest.mark.slow

LEASE_S = 3.0  # short, so a killed runner's lease expires within the test


def _enrolled(settings: Settings, photo: Path) -> tuple[Runtime, str]:
    initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[photo.read_bytes()],
        purposes=["test"],
        clients=[],
        expires_days=1,
        evidence_sha256="f" * 64,
        actor="test",
    )
    return rt, subject.id


def _jobs_for(rt: Runtime, output: Path) -> list[Generation]:
    from sqlmodel import select

    with rt.session() as session:
        return list(session.exec(select(Generation).where(Generation.output_path == str(output))).all())


@dataclass
class KilledRun:
    rt: Runtime
    gen_id: str
    keep: Path
    out_dir: Path


@pytest.fixture(scope="module")
def killed_run(
    tmp_path_factory: pytest.TempPathFactory, example_photo: Path, example_audio: Path
) -> Iterator[KilledRun]:
    """`provatar generate -o videos/keep.mp4` (keep.mp4 already there) killed with SIGKILL mid-render."""
    tmp_path = tmp_path_factory.mktemp("killed-generate")
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False, job_lease_seconds=LEASE_S)
    rt, subject_id = _enrolled(settings, example_photo)
    audio = short_speech(example_audio, tmp_path / "speech.wav", 8.0)  # long enough to be caught mid-render
    out_dir = tmp_path / "videos"
    out_dir.mkdir()
    keep = out_dir / "keep.mp4"
    keep.write_bytes(b"my precious video")
    env = {**cli_env(settings.data_dir), "PROVATAR_JOB_LEASE_SECONDS": str(LEASE_S)}
    cmd = [sys.executable, "-m", "service.cli", "generate", str(example_photo), str(audio), "-o", str(keep)]
    proc = subprocess.Popen(
        [*cmd, "--subject", subject_id, "--purpose", "test"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Mid-render: the job is running under the CLI's lease and its temp file beside the target exists.
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
            jobs = _jobs_for(rt, keep)
            parts = [p for p in out_dir.iterdir() if p.name != "keep.mp4"]
            if jobs and jobs[0].status == JobStatus.running and jobs[0].lease_owner and parts:
                break
            assert time.monotonic() < deadline, "the render never started"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    yield KilledRun(rt, jobs[0].id, keep, out_dir)
    rt.close()


def test_a_killed_generate_is_failed_by_the_reaper_and_leaves_the_output_path_alone(killed_run: KilledRun) -> None:
    rt, gen_id, keep = killed_run.rt, killed_run.gen_id, killed_run.keep
    assert keep.read_bytes() == b"my precious video"
    # What SIGKILL left beside the target is only the run's hidden temp files, of the sweepable patterns.
    leftovers = [p for p in killed_run.out_dir.iterdir() if p.name != "keep.mp4"]
    assert leftovers and all(p.name.startswith(".") and any(p.match(g) for g in PART_GLOBS) for p in leftovers)
    lookalike = killed_run.out_dir / ".keep.mp4.notes.txt"  # the user's, only named alike: never touched
    lookalike.write_text("mine")
    # Before the lease runs out, nobody may touch the job (its runner could be alive, only slow). Asked at a moment
    # just before the recorded expiry, not at "now": on a loaded machine the fixture's teardown alone can outlast
    # the short test lease.
    expires = _jobs_for(rt, keep)[0].lease_expires_at
    assert expires is not None
    assert gen_id not in reap_expired_leases(rt, now=expires - timedelta(seconds=0.5))
    assert all(p.exists() for p in leftovers)
    time.sleep(LEASE_S + 0.5)
    assert gen_id in reap_expired_leases(rt, now=datetime.now(UTC) + timedelta(seconds=1))
    job = _jobs_for(rt, keep)[0]
    assert job.status == JobStatus.failed and job.error_code == "lease_expired", job
    assert "provatar generate" in str(job.error_message)  # the message tells the user to run it again
    # Not requeued (a server must never finish it into the user's file), and the file is still the user's.
    assert keep.read_bytes() == b"my precious video"
    assert reap_expired_leases(rt, now=datetime.now(UTC) + timedelta(hours=1)) == []
    # The periodic sweep never looks beside a CLI user's -o path: the reaper that failed the job removed the run's
    # temp files there, and nothing else.
    assert sorted(p.name for p in killed_run.out_dir.iterdir()) == [".keep.mp4.notes.txt", "keep.mp4"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the installation's SQLite file) or a fresh schema on the real PostgreSQL server, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    from tests.conftest import postgres_schema

    with postgres_schema("t_faults") as url:
        yield url


@pytest.fixture()
def api(tmp_path: Path, db_url: str | None) -> Iterator[tuple[TestClient, Runtime, tuple[str, str]]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, rate_limits_enabled=False)
    init = initialize(settings)
    rt = Runtime(settings)
    from service.api.main import create_app

    with TestClient(create_app(settings, runtime=rt, start_worker=False), raise_server_exceptions=False) as client:
        yield client, rt, (str(init.admin_client_id), str(init.admin_secret))
    rt.close()


@contextmanager
def _lock_held_elsewhere(rt: Runtime) -> Iterator[None]:
    """Another session holding the database: SQLite's one writer lock (BEGIN EXCLUSIVE), or on PostgreSQL an
    exclusive lock on the audit table (every write request appends to it), as an operator's session might."""
    url = rt.engine.url
    if url.get_backend_name() == "sqlite":
        assert url.database and Path(url.database).is_file()
        holder = sqlite3.connect(url.database, timeout=0)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    from sqlalchemy import text

    with rt.engine.connect() as conn:  # its own pooled connection: a separate server session
        conn.execute(text("LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def test_a_held_database_lock_is_a_bounded_503_and_the_service_recovers(
    api: tuple[TestClient, Runtime, tuple[str, str]],
) -> None:
    client, rt, admin = api
    form = {"grant_type": "client_credentials", "scope": "consent:write"}
    assert client.post("/v1/token", data=form, auth=admin).status_code == 200
    with _lock_held_elsewhere(rt):
        start = time.monotonic()
        r = client.post("/v1/token", data=form, auth=admin)  # issuing a token appends an audit entry
        took = time.monotonic() - start
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "database_unavailable" and int(r.headers["retry-after"]) > 0
    assert "Traceback" not in r.text and "sqlite" not in r.text.lower() and "lock" not in r.json()["code"]
    # One lock wait (service/db.py) bounds the answer: no hang, and no second wait to audit the refusal.
    assert LOCK_WAIT_SECONDS <= took < LOCK_WAIT_SECONDS + 15, took
    # Released: the same request goes through again.
    r = client.post("/v1/token", data=form, auth=admin)
    assert r.status_code == 200, r.text


@pytest.fixture()
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (root only; skips elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_generate_into_a_full_filesystem_is_a_clean_error_and_keeps_the_existing_file(
    tiny_tmpfs: Path, tmp_path: Path, example_photo: Path, example_audio: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limits_enabled=False)
    rt, subject_id = _enrolled(settings, example_photo)
    rt.close()
    audio = short_speech(example_audio, tmp_path / "speech.wav", 4.0)
    keep = tiny_tmpfs / "keep.mp4"
    keep.write_bytes(b"old video")
    filler = tiny_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leave less room than any video needs
    r = subprocess.run(
        [sys.executable, "-m", "service.cli", "generate", str(example_photo), str(audio), "-o", str(keep)]
        + ["--subject", subject_id, "--purpose", "test"],
        env=cli_env(settings.data_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = r.stdout + r.stderr
    # The environment failing, not bad input: exit 1 (ExitStatus.ERROR) with the specific code, not internal_error.
    assert r.returncode == 1, output
    assert "error[storage_full]" in output and "Traceback" not in output, output
    assert keep.read_bytes() == b"old video"
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["filler", "keep.mp4"]  # no partial file left
