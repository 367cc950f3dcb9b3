"""Jobs as integrators expect: 202 + Location + Retry-After, Idempotency-Key, cancel (queued and running),
submit -> run -> download (ranges too) -> delete on local and S3 storage, and cursor pagination (generations past
500, subjects, audit events)."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from safeguards.consent import Subject
from safeguards.provenance import read_provenance
from service import consent_ops
from service.api.main import create_app
from service.jobs import Worker
from service.models import Generation, IdempotencyKey, JobStatus
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import short_speech
from tests.service.test_http_rfc import assert_problem

pytestmark = pytest.mark.slow


@dataclass
class Jobs:
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]
    subject_id: str
    photo: bytes
    audio: bytes
    long_audio: bytes

    def bearer(self, scope: str = "generate", creds: tuple[str, str] | None = None) -> dict[str, str]:
        r = self.client.post(
            "/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=creds or self.admin
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def submit(self, *, key: str | None = None, audio: bytes | None = None, creds: tuple[str, str] | None = None):  # type: ignore[no-untyped-def]
        headers = self.bearer(creds=creds)
        if key is not None:
            headers["Idempotency-Key"] = key
        files = {"photo": ("p.png", self.photo, "image/png"), "audio": ("a.wav", audio or self.audio, "audio/wav")}
        data = {"subject_id": self.subject_id, "purpose": "jobs"}
        return self.client.post("/v1/generations", data=data, files=files, headers=headers)

    def status(self, gen_id: str) -> Generation:
        with self.rt.session() as session:
            gen = session.get(Generation, gen_id)
            assert gen is not None
            return gen


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, example_photo: Path, example_audio: Path) -> Iterator[Jobs]:
    tmp = tmp_path_factory.mktemp("jobs")
    settings = Settings(data_dir=tmp / "data", rate_limits_enabled=False)  # limits: test_ratelimit.py
    init = initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[example_photo.read_bytes()],
        purposes=["jobs"],
        clients=[],
        expires_days=1,
        evidence_sha256="b" * 64,
        actor="test",
    )
    audio = short_speech(example_audio, tmp / "a.wav", 1.0).read_bytes()
    long_audio = short_speech(example_audio, tmp / "long.wav", 8.0).read_bytes()
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        yield Jobs(
            client,
            rt,
            (str(init.admin_client_id), str(init.admin_secret)),
            subject.id,
            example_photo.read_bytes(),
            audio,
            long_audio,
        )
    rt.close()


def _count_jobs(rt: Runtime) -> int:
    from sqlmodel import func, select

    with rt.session() as session:
        return int(session.exec(select(func.count()).select_from(Generation)).one())


def test_submit_is_202_with_location_and_retry_after(jobs: Jobs) -> None:
    r = jobs.submit()
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/generations/{job['id']}"
    assert int(r.headers["retry-after"]) >= 1
    poll = jobs.client.get(r.headers["location"], headers=jobs.bearer())
    assert poll.status_code == 200 and poll.json()["status"] == "queued" and poll.headers["retry-after"] == "2"


def test_idempotency_key_same_request_same_job_other_request_409(jobs: Jobs) -> None:
    before = _count_jobs(jobs.rt)
    first = jobs.submit(key="order-42")
    again = jobs.submit(key="order-42")
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert _count_jobs(jobs.rt) == before + 1
    # Same key, different audio: 409 problem, no job.
    other = jobs.submit(key="order-42", audio=jobs.long_audio)
    assert_problem(other, 409, "idempotency_key_reused")
    assert _count_jobs(jobs.rt) == before + 1
    # Keys are per client: another client's same key is its own request.
    admin = jobs.bearer("clients:admin")
    partner = jobs.client.post("/v1/clients", json={"name": "idem-partner", "scopes": ["generate"]}, headers=admin)
    creds = (partner.json()["client_id"], partner.json()["client_secret"])
    theirs = jobs.submit(key="order-42", creds=creds)
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    # Past the retention window the key names a new request.
    with jobs.rt.session() as session:
        row = session.get(IdempotencyKey, (jobs.admin[0], "order-42"))
        assert row is not None and row.generation_id == first.json()["id"]
        row.created_at = datetime.now(UTC) - timedelta(hours=25)
        session.add(row)
        session.commit()
    later = jobs.submit(key="order-42")
    assert later.status_code == 202 and later.json()["id"] != first.json()["id"]
    # A refused request releases its key (nothing was created): a corrected retry with it works.
    bad = jobs.submit(key="retry-me", audio=b"not audio")
    assert_problem(bad, 400, "invalid_audio")
    assert jobs.submit(key="retry-me").status_code == 202
    assert_problem(jobs.submit(key="x" * 300), 400, "invalid_request")


def test_cancel_queued_job_never_runs(jobs: Jobs) -> None:
    job = jobs.submit().json()
    r = jobs.client.post(f"/v1/generations/{job['id']}/cancel", headers=jobs.bearer())
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    Worker(jobs.rt).run_pending()  # runs whatever else is queued, never this one
    gen = jobs.status(job["id"])
    assert gen.status == JobStatus.cancelled and gen.started_at is None and gen.attempts == 0
    assert not Path(gen.photo_path).exists()  # its uploads are discarded
    again = jobs.client.post(f"/v1/generations/{job['id']}/cancel", headers=jobs.bearer())
    assert again.status_code == 200
    events = [e.to_record() for e in jobs.rt.audit.query(action="generation.cancelled", limit=100)]
    assert sum(e["details"]["generation_id"] == job["id"] for e in events) == 1  # type: ignore[index]


def test_cancel_running_job_stops_at_a_frame_boundary(jobs: Jobs) -> None:
    job = jobs.submit(audio=jobs.long_audio).json()  # 8 s = 200 frames
    worker = Worker(jobs.rt)
    thread = threading.Thread(target=worker.run_pending)
    thread.start()
    deadline = time.monotonic() + 120
    while jobs.status(job["id"]).progress < 0.05:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    r = jobs.client.post(f"/v1/generations/{job['id']}/cancel", headers=jobs.bearer())
    t0 = time.monotonic()
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested_at"]
    thread.join(60)
    stopped_after = time.monotonic() - t0
    gen = jobs.status(job["id"])
    assert gen.status == JobStatus.cancelled and gen.error_code == "cancelled", gen
    assert gen.progress < 0.9 and stopped_after < 5, (gen.progress, stopped_after)
    assert gen.output_path and not Path(gen.output_path).exists()
    assert not list(Path(gen.output_path).parent.glob(f".{job['id']}*"))  # no partial file either
    r = jobs.client.post(f"/v1/generations/{job['id']}/cancel", headers=jobs.bearer())
    assert r.status_code == 200
    actions = {e.action for e in jobs.rt.audit.query(subject=jobs.subject_id, limit=10_000)}
    assert {"generation.cancel_requested", "generation.cancelled"} <= actions


@pytest.fixture(params=["local", "s3"])
def stored_jobs(request: pytest.FixtureRequest, jobs: Jobs) -> Iterator[tuple[Jobs, Any]]:
    """The jobs API on each storage: the data dir, and an S3 bucket on a real S3-compatible server (moto_server on
    loopback). Same database and subject; `(jobs, s3 client or None)`."""
    if request.param == "local":
        yield jobs, None
        return
    s3 = request.getfixturevalue("s3_server")
    bucket = s3.new_bucket()
    settings = Settings(**{**jobs.rt.settings.model_dump(), **s3.settings(bucket)})
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        yield Jobs(client, rt, jobs.admin, jobs.subject_id, jobs.photo, jobs.audio, jobs.long_audio), s3.client()
    rt.close()


def _other_machine(jobs: Jobs, tmp_path: Path) -> Runtime:
    """A worker as on another machine: its own empty data dir (none of the API's files), the same database, bucket,
    keys and signing certificates (what a deployment gives every worker)."""
    api = jobs.rt.settings
    data = tmp_path / "worker-machine"
    shutil.copytree(api.keys_dir, data / "keys")
    pki = tmp_path / "worker-pki"  # read-only configuration, outside its data dir
    shutil.copytree(api.pki_dir, pki)
    settings = Settings(
        **{
            **api.model_dump(),
            "data_dir": data,
            "database_url": api.db_url,
            "signing_cert_chain": pki / "chain.pem",
            "signing_key": pki / "signer.key",
            "trust_anchors": pki / "root.pem",
            "audit_signing_key": api.audit_signing_key or api.keys_dir / "audit_ed25519.pem",
            "audit_witness_path": api.witness_path,
        }
    )
    return Runtime(settings)


def _stored_bytes(jobs: Jobs, location: str) -> bytes | None:
    """What the storage holds at a recorded location (read back through the store), None when nothing."""
    key = jobs.rt.storage.key_of(location)
    assert key is not None, location
    return b"".join(jobs.rt.storage.iter_bytes(key)) if jobs.rt.storage.exists(key) else None


def test_submit_run_download_and_delete_through_each_storage(stored_jobs: tuple[Jobs, Any], tmp_path: Path) -> None:
    jobs, s3 = stored_jobs
    job = jobs.submit().json()
    gen = jobs.status(job["id"])
    if s3 is not None:  # staged in the bucket for a worker on any machine, nothing left on the API's disk
        assert gen.photo_path.startswith("s3://") and gen.output_path and gen.output_path.startswith("s3://")
        assert _stored_bytes(jobs, gen.photo_path) == jobs.photo
        assert not (jobs.rt.settings.uploads_dir / gen.photo_path.split("/")[-2]).exists()
    else:
        assert Path(gen.photo_path).is_file() and Path(str(gen.output_path)).parent == jobs.rt.settings.outputs_dir
    r = jobs.client.delete(f"/v1/generations/{job['id']}", headers=jobs.bearer())
    assert_problem(r, 409, "not_finished")
    worker_rt = _other_machine(jobs, tmp_path) if s3 is not None else jobs.rt
    Worker(worker_rt).run_pending()
    gen = jobs.status(job["id"])
    assert gen.status == JobStatus.succeeded, (gen.error_code, gen.error_message)
    if s3 is not None:  # the worker machine kept nothing: its fetched inputs and temp renders are gone
        assert not [p for p in worker_rt.settings.data_dir.rglob("*") if p.is_file() and "keys" not in p.parts]
        worker_rt.close()
    assert _stored_bytes(jobs, gen.photo_path) is None  # uploads discarded after the job, in the bucket too
    assert not list(jobs.rt.settings.work_dir.glob("*"))  # fetched inputs and temp renders are gone
    assert_problem(
        jobs.client.post(f"/v1/generations/{job['id']}/cancel", headers=jobs.bearer()), 409, "not_cancellable"
    )

    video = jobs.client.get(f"/v1/generations/{job['id']}/video", headers=jobs.bearer())
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4", video.text
    assert video.headers["content-length"] == str(len(video.content)) and video.headers["accept-ranges"] == "bytes"
    assert video.content == _stored_bytes(jobs, str(gen.output_path))
    downloaded = tmp_path / "download.mp4"
    downloaded.write_bytes(video.content)
    report = read_provenance(downloaded, trust_anchors_pem=jobs.rt.trust_anchors_pem())
    assert report.state == "Trusted", report
    completed = _completed(jobs, job["id"])
    assert hashlib.sha256(video.content).hexdigest() == completed["output_sha256"]
    # Each stage timed (the stage metrics read these), "publish" being the upload to the bucket with S3.
    assert set(completed["stage_seconds"]) == {"inputs", "policy", "render", "sign", "publish"}
    assert all(v >= 0 for v in completed["stage_seconds"].values())
    # Range requests (players seek with them) behave alike on both stores.
    part = jobs.client.get(f"/v1/generations/{job['id']}/video", headers={**jobs.bearer(), "Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == video.content[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(video.content)}"
    tail = jobs.client.get(f"/v1/generations/{job['id']}/video", headers={**jobs.bearer(), "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == video.content[-10:]
    beyond = jobs.client.get(
        f"/v1/generations/{job['id']}/video", headers={**jobs.bearer(), "Range": f"bytes={len(video.content)}-"}
    )
    assert beyond.status_code == 416

    r = jobs.client.delete(f"/v1/generations/{job['id']}", headers=jobs.bearer())
    assert r.status_code == 200 and r.json()["output_deleted_at"] and r.json()["download_url"] is None
    assert _stored_bytes(jobs, str(gen.output_path)) is None
    if s3 is not None:  # nothing of the job is left in the bucket
        bucket = jobs.rt.settings.storage_url.split("/")[2]  # type: ignore[union-attr]
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert_problem(jobs.client.get(f"/v1/generations/{job['id']}/video", headers=jobs.bearer()), 410, "output_deleted")
    assert jobs.client.delete(f"/v1/generations/{job['id']}", headers=jobs.bearer()).status_code == 200
    deleted = [e.to_record() for e in jobs.rt.audit.query(action="generation.output_deleted", limit=100)]
    assert [e["details"]["generation_id"] for e in deleted].count(job["id"]) == 1  # type: ignore[index]
    assert_problem(jobs.client.delete("/v1/generations/gen_nope", headers=jobs.bearer()), 404, "not_found")


def test_an_unreachable_bucket_at_submit_is_a_clean_503_and_leaves_nothing(jobs: Jobs, tmp_path: Path) -> None:
    from tests.service.conftest import free_port

    dead = {
        "storage_url": "s3://provatar-gone/x",
        "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "s3_region": "us-east-1",
        "s3_access_key_id": "a",
        "s3_secret_access_key": "b",
    }
    settings = Settings(**{**jobs.rt.settings.model_dump(), **dead})
    rt = Runtime(settings)
    before = _count_jobs(jobs.rt)
    staged_before = set(jobs.rt.settings.uploads_dir.iterdir())
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        broken = Jobs(client, rt, jobs.admin, jobs.subject_id, jobs.photo, jobs.audio, jobs.long_audio)
        r = broken.submit()
        assert_problem(r, 503, "object_storage_unavailable")
        assert int(r.headers["retry-after"]) > 0 and "127.0.0.1" not in r.text
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "storage" in ready.json()["failed"]
    rt.close()
    assert _count_jobs(jobs.rt) == before  # no job, and no staged upload left behind
    assert set(jobs.rt.settings.uploads_dir.iterdir()) == staged_before
    rejected = [e.to_record() for e in jobs.rt.audit.query(action="request.rejected", limit=1000)]
    assert any(e["details"]["code"] == "object_storage_unavailable" for e in rejected)  # type: ignore[index]


def _completed(jobs: Jobs, gen_id: str) -> dict[str, Any]:
    events = [e.to_record() for e in jobs.rt.audit.query(action="generation.completed", limit=1000)]
    return next(e["details"] for e in events if e["details"]["generation_id"] == gen_id)  # type: ignore[index,return-value]


def _walk(jobs: Jobs, url: str, headers: dict[str, str]) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    next_url: str | None = url
    while next_url:
        r = jobs.client.get(next_url, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        assert (page["next"] is None) == ("link" not in r.headers)
        next_url = page["next"]
    return items


def test_cursor_pagination_generations_past_500_subjects_and_audit(jobs: Jobs) -> None:
    base = datetime.now(UTC) - timedelta(days=1)
    with jobs.rt.session() as session:
        for i in range(520):
            session.add(
                Generation(
                    id=f"gen_page{i:04d}",
                    request_id="r",
                    subject_id=jobs.subject_id,
                    purpose="jobs",
                    client_id=jobs.admin[0],
                    watermark_tag=0x7000_0000 + i,
                    photo_path="/nonexistent",
                    audio_path="/nonexistent",
                    status=JobStatus.failed,
                    # Ten share each timestamp, so the id must break ties.
                    created_at=base + timedelta(seconds=i // 10),
                )
            )
        for i in range(7):
            session.add(Subject(display_name=f"page subject {i}", created_at=base, created_by="test"))
        session.commit()
    gens = _walk(jobs, "/v1/generations?limit=200", jobs.bearer())
    ids = [str(g["id"]) for g in gens]
    assert len(ids) == len(set(ids)) and {f"gen_page{i:04d}" for i in range(520)} <= set(ids)
    created = [str(g["created_at"]) for g in gens]
    assert created == sorted(created, reverse=True)  # newest first
    subjects = _walk(jobs, "/v1/subjects?limit=3", jobs.bearer("consent:read"))
    assert len(subjects) == len({s["id"] for s in subjects}) >= 8
    events = _walk(jobs, "/v1/audit/events?limit=50&action=generation.requested", jobs.bearer("audit:read"))
    seqs = [int(str(e["seq"])) for e in events]
    assert seqs == sorted(set(seqs)) and len(seqs) >= 5
    assert all(e["action"] == "generation.requested" for e in events)  # the next links keep the filter


def test_a_key_whose_first_request_is_still_running_is_a_409(jobs: Jobs) -> None:
    from service import idempotency
    from service.errors import Conflict

    ttl = timedelta(hours=24)
    args = {"client_id": "cl_x", "key": "k-busy", "request_sha256": "f" * 64, "ttl": ttl}
    assert idempotency.claim(jobs.rt, **args) is None  # type: ignore[arg-type]
    with pytest.raises(Conflict) as busy:
        idempotency.claim(jobs.rt, **args)  # type: ignore[arg-type]
    assert busy.value.code == "idempotency_request_in_progress"
    idempotency.release(jobs.rt, client_id="cl_x", key="k-busy")
    assert idempotency.claim(jobs.rt, **args) is None  # type: ignore[arg-type]
    with jobs.rt.session() as session:
        row = session.get(IdempotencyKey, ("cl_x", "k-busy"))
        assert row is not None
        row.created_at = datetime.now(UTC) - timedelta(hours=30)
        session.add(row)
        session.commit()
    assert idempotency.purge_expired(jobs.rt, ttl=ttl) >= 1


def test_erasure_reaches_the_s3_bucket(jobs: Jobs, s3_server: Any, example_photo: Path) -> None:
    """Erasing a subject deletes their videos where they are stored: objects in the shared bucket, not only files in
    the data dir; the download is then 410 subject_erased and the audit log still verifies."""
    bucket = s3_server.new_bucket()
    settings = Settings(**{**jobs.rt.settings.model_dump(), **s3_server.settings(bucket)})
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Erasable",
        photos=[example_photo.read_bytes()],
        purposes=["jobs"],
        clients=[],
        expires_days=1,
        evidence_sha256="e" * 64,
        actor="test",
    )
    try:
        with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
            on_s3 = Jobs(client, rt, jobs.admin, subject.id, jobs.photo, jobs.audio, jobs.long_audio)
            job = on_s3.submit().json()
            Worker(rt).run_pending()
            gen = on_s3.status(job["id"])
            assert gen.status == JobStatus.succeeded and str(gen.output_path).startswith("s3://"), gen.error_message
            assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 1  # the video
            r = client.post(f"/v1/subjects/{subject.id}/erase", headers=on_s3.bearer("consent:write"))
            assert r.status_code == 200, r.text
            assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
            gone = client.get(f"/v1/generations/{job['id']}/video", headers=on_s3.bearer())
            assert_problem(gone, 410, "subject_erased")
        assert rt.audit.verify().entries >= 1  # raises when the chain or a checkpoint is broken
    finally:
        rt.close()
