"""Issue 14 item 1: outputs are never destroyed by a failure, a job that cannot write fails visibly, leftovers of
killed runs are swept, and revoking consent stops the subject's jobs.

Each test failed on the code before the fix (checked): the refused generate deleted keep.mp4; -o naming a directory
or a missing/read-only directory gave internal_error (exit 1); the API job stayed `running` with nothing audited;
nothing swept stale files; revocation left queued and running jobs alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from service import consent_ops
from service.jobs import CancelCheck, Worker
from service.models import Generation, JobStatus
from service.pipeline import create_generation, run_generation
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import Cli, short_speech

pytestmark = pytest.mark.slow


@dataclass
class Site:
    settings: Settings
    rt: Runtime
    subject_id: str
    photo: Path
    audio: Path
    long_audio: Path


@pytest.fixture(scope="module")
def site(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, example_photo: Path, example_audio: Path
) -> Iterator[Site]:
    settings = Settings(data_dir=data_dir, rate_limits_enabled=False)
    initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[example_photo.read_bytes()],
        purposes=["test"],
        clients=[],
        expires_days=1,
        evidence_sha256="c" * 64,
        actor="test",
    )
    work = tmp_path_factory.mktemp("hardening-media")
    audio = short_speech(example_audio, work / "a.wav", 1.0)
    long_audio = short_speech(example_audio, work / "long.wav", 8.0)
    yield Site(settings, rt, subject.id, example_photo, audio, long_audio)
    rt.close()


def _job(site: Site, gen_id: str) -> Generation:
    with site.rt.session() as session:
        gen = session.get(Generation, gen_id)
        assert gen is not None
        return gen


def _audit(site: Site, action: str) -> list[dict]:  # type: ignore[type-arg]
    from sqlmodel import select

    from audit.models import AuditEvent

    with site.rt.session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action == action)).all()
        return [json.loads(r.details) if isinstance(r.details, str) else r.details for r in rows]


def _generate(cli: Cli, site: Site, out: Path, subject: str | None = None):  # type: ignore[no-untyped-def]
    return cli(
        "generate",
        str(site.photo),
        str(site.audio),
        "-o",
        str(out),
        "--subject",
        subject or site.subject_id,
        "--purpose",
        "test",
    )


def test_refused_generate_keeps_an_existing_output_file(cli: Cli, site: Site, tmp_path: Path) -> None:
    keep = tmp_path / "keep.mp4"
    keep.write_bytes(b"my precious video")
    r = _generate(cli, site, keep, subject="subj_nobody")
    assert r.exit_code == 3, r.output
    assert "error[unknown_subject]" in r.output
    assert keep.read_bytes() == b"my precious video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]  # no temp file left either


def test_output_naming_a_directory_or_a_missing_directory_is_exit_2(cli: Cli, site: Site, tmp_path: Path) -> None:
    as_dir = tmp_path / "videos.mp4"
    as_dir.mkdir()
    for out, words in ((as_dir, "is a directory"), (tmp_path / "nowhere" / "v.mp4", "does not exist")):
        r = _generate(cli, site, out)
        assert r.exit_code == 2, r.output
        assert "error[output_not_writable]" in r.output and words in r.output and "Traceback" not in r.output
    assert as_dir.is_dir() and not list(as_dir.iterdir())
    assert any(d.get("code") == "output_not_writable" for d in _audit(site, "request.rejected"))


@pytest.fixture()
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can create files in, root included (chattr +i); skips where that is not possible."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "keep.mp4").write_bytes(b"old")
    os.chmod(d, 0o555)
    immutable = False
    try:
        (d / "probe").touch()
    except OSError:
        pass
    else:  # root ignores modes: make it immutable instead
        (d / "probe").unlink()
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)]).returncode != 0:
            pytest.skip("cannot make a read-only directory here")
        immutable = True
    yield d
    if immutable:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    os.chmod(d, 0o755)


def test_read_only_output_directory_is_exit_2_and_keeps_the_file(cli: Cli, site: Site, read_only_dir: Path) -> None:
    r = _generate(cli, site, read_only_dir / "keep.mp4")
    assert r.exit_code == 2, r.output
    assert "error[output_not_writable]" in r.output and "Traceback" not in r.output
    assert (read_only_dir / "keep.mp4").read_bytes() == b"old"


def test_api_job_that_cannot_write_its_output_fails_visibly(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    outputs = site.settings.outputs_dir
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.write_bytes(b"not a directory")  # the outputs dir cannot be created: a real ENOTDIR/EEXIST, no mocks
    try:
        gen = create_generation(
            site.rt,
            subject_id=site.subject_id,
            purpose="test",
            client_id="cli",
            photo_path=site.photo,
            audio_path=site.audio,
            output_path=None,
            request_id="req-unwritable",
        )
        with caplog.at_level(logging.WARNING, logger="provatar"):
            assert Worker(site.rt).run_pending() >= 1
    finally:
        outputs.unlink()
        outputs.mkdir()
    job = _job(site, gen.id)
    assert job.status == JobStatus.failed and job.error_code == "output_not_writable", job
    assert any(d.get("generation_id") == gen.id for d in _audit(site, "generation.failed"))
    assert any(gen.id in rec.getMessage() for rec in caplog.records)


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_sweep_removes_stale_parts_and_uploads_of_finished_jobs(site: Site) -> None:
    outputs, uploads = site.settings.outputs_dir, site.settings.uploads_dir
    outputs.mkdir(exist_ok=True)
    stale_part = outputs / ".gen_dead.mp4.ab12cd34.unsigned.part.mp4"
    stale_enc = outputs / ".gen_dead.mp4.ab12cd34.unsigned.part.mp4.0123abcd.part"
    fresh_part = outputs / ".gen_live.mp4.ef56ab78.unsigned.part.mp4"
    result = outputs / "gen_done.mp4"
    for p in (stale_part, stale_enc, fresh_part, result):
        p.write_bytes(b"x")
    for p in (stale_part, stale_enc, result):
        _age(p, 7200)
    # Uploads: one of a job that failed (killed before its cleanup), one of a queued job, one with no job at all.
    dirs = {name: uploads / name for name in ("req_failedjob", "req_queuedjob", "det_orphan", "req_fresh")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
        (d / "photo.png").write_bytes(site.photo.read_bytes())
        (d / "audio.wav").write_bytes(site.audio.read_bytes())
    ids = {}
    for name in ("req_failedjob", "req_queuedjob"):
        ids[name] = create_generation(
            site.rt,
            subject_id=site.subject_id,
            purpose="test",
            client_id="cli",
            photo_path=dirs[name] / "photo.png",
            audio_path=dirs[name] / "audio.wav",
            output_path=None,
            request_id=name,
        ).id
    from service import job_state

    job_state.move(site.rt, ids["req_failedjob"], JobStatus.failed, error_code="interrupted")
    for name in ("req_failedjob", "req_queuedjob", "det_orphan"):
        _age(dirs[name], 7200)
    from service.sweep import sweep_stale_files

    swept = sweep_stale_files(site.rt)
    assert not stale_part.exists() and not stale_enc.exists()
    assert fresh_part.exists() and result.exists()  # a run in progress elsewhere, and a finished video: kept
    assert not dirs["req_failedjob"].exists() and not dirs["det_orphan"].exists()
    assert dirs["req_queuedjob"].exists() and dirs["req_fresh"].exists()
    assert len(swept.parts) == 2 and len(swept.uploads) == 2
    job_state.move(site.rt, ids["req_queuedjob"], JobStatus.cancelled)
    fresh_part.unlink()


def test_worker_start_runs_the_sweep(site: Site) -> None:
    outputs = site.settings.outputs_dir
    outputs.mkdir(exist_ok=True)
    stale = outputs / ".gen_killed.mp4.00000000.signed.part.mp4"
    stale.write_bytes(b"x")
    _age(stale, 7200)
    worker = Worker(site.rt, poll_seconds=60)
    worker.start()
    worker.stop(timeout=5)
    assert not stale.exists()


def test_revoking_consent_cancels_the_subjects_queued_and_running_jobs(
    site: Site, example_photo: Path, tmp_path: Path
) -> None:
    subject, _ = consent_ops.enroll(
        site.rt,
        name="Revoker",
        photos=[example_photo.read_bytes()],
        purposes=["test"],
        clients=[],
        expires_days=1,
        evidence_sha256="d" * 64,
        actor="test",
    )

    def job(rid: str) -> str:
        return create_generation(
            site.rt,
            subject_id=subject.id,
            purpose="test",
            client_id="cli",
            photo_path=site.photo,
            audio_path=site.long_audio,
            output_path=tmp_path / f"{rid}.mp4",
            request_id=rid,
        ).id

    running_id, queued_id = job("running"), job("queued")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_generation(site.rt, running_id, should_stop=CancelCheck(site.rt, running_id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while _job(site, running_id).consent_record_id is None:  # admitted by the policy: now rendering
        assert time.monotonic() < deadline and thread.is_alive(), _job(site, running_id)
        time.sleep(0.05)
    consent_ops.revoke(site.rt, subject_id=subject.id, reason="withdrawn", actor="test")
    assert _job(site, queued_id).status == JobStatus.cancelled
    thread.join(120)
    assert not errors, errors
    assert _job(site, running_id).status == JobStatus.cancelled
    assert not (tmp_path / "running.mp4").exists() and not list(tmp_path.glob(".*"))
    reasons = _audit(site, "generation.cancelled") + _audit(site, "generation.cancel_requested")
    assert {d["generation_id"] for d in reasons if d.get("reason") == "consent_revoked"} == {running_id, queued_id}
