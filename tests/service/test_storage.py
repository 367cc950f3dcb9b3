"""service/storage.py on both stores: the data dir and an S3 bucket on a real S3-compatible server (moto_server in
its own process on loopback). Big objects go up in parts and come down in bounded chunks; failures are clean 503s;
only per-request upload folders are ever discarded. The full API round trip is in test_jobs_http.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from service.api.downloads import stored_file_response
from service.errors import ObjectStorageUnavailable, describe
from service.settings import Settings
from service.storage import CHUNK_BYTES, LocalStorage, S3Storage, Storage, open_storage
from tests.service.conftest import S3Server, free_port

BIG = 24 * 1024 * 1024  # three multipart parts, 24 download chunks


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "data")
        return
    s3: S3Server = request.getfixturevalue("s3_server")
    settings = Settings(data_dir=tmp_path / "data", **s3.settings(s3.new_bucket(), prefix="p/q"))
    yield open_storage(settings)


def _file(path: Path, size: int) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            fh.write(block)
            digest.update(block)
            left -= len(block)
    return path, digest.hexdigest()


def _request(headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


def _serve(response: Any, request: Request) -> tuple[int, dict[str, str], str, int, int]:
    """Run the response as the ASGI server would; returns status, headers, sha256 of the body, the biggest body
    message and the peak of Python memory allocated while sending (tracemalloc)."""
    digest = hashlib.sha256()
    start: dict[str, Any] = {}
    biggest = 0

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal biggest
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            biggest = max(biggest, len(body))
            digest.update(body)

    scope = {**request.scope, "http_version": "1.1"}
    tracemalloc.start()
    try:
        asyncio.run(response(scope, receive, send))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, digest.hexdigest(), biggest, peak


def test_a_big_object_goes_up_and_comes_down_in_bounded_chunks(store: Storage, tmp_path: Path) -> None:
    src, digest = _file(tmp_path / "work" / "big.mp4", BIG)
    store.put_file(src, "outputs/gen_big.mp4")
    assert not src.exists()  # consumed: published in one step, nothing left in the staging dir
    assert store.size("outputs/gen_big.mp4") == BIG
    if isinstance(store, S3Storage):  # uploaded in parts (an S3 multipart ETag ends in -<parts>)
        head = store.client.head_object(Bucket=store.bucket, Key=store.prefix + "outputs/gen_big.mp4")
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
        assert store.location("outputs/gen_big.mp4").startswith(f"s3://{store.bucket}/p/q/outputs/")

    location = store.location("outputs/gen_big.mp4")
    whole = _request()
    status, headers, body_sha, biggest, peak = _serve(
        stored_file_response(whole, store, location, media_type="video/mp4", filename="gen_big.mp4"), whole
    )
    assert status == 200 and body_sha == digest and headers["content-length"] == str(BIG)
    assert biggest <= CHUNK_BYTES
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held while serving a {BIG / 2**20:.0f} MiB object"

    ranged = _request({"Range": "bytes=1000-2999999"})
    status, headers, body_sha, _, _ = _serve(
        stored_file_response(ranged, store, location, media_type="video/mp4", filename="x.mp4"), ranged
    )
    chunks = store.iter_bytes("outputs/gen_big.mp4", 1000, 2999999)
    assert status == 206 and headers["content-range"] == f"bytes 1000-2999999/{BIG}"
    assert body_sha == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert headers["content-length"] == str(2999999 - 1000 + 1)


def test_put_replaces_only_with_a_complete_object_and_delete_is_idempotent(store: Storage, tmp_path: Path) -> None:
    old, _ = _file(tmp_path / "work" / "old.mp4", 1000)
    store.put_file(old, "outputs/gen_a.mp4")
    with pytest.raises((OSError, ObjectStorageUnavailable)):
        store.put_file(tmp_path / "work" / "missing.mp4", "outputs/gen_a.mp4")  # a run that produced nothing
    assert store.size("outputs/gen_a.mp4") == 1000  # what was there survives
    new, digest = _file(tmp_path / "work" / "new.mp4", 3000)
    store.put_file(new, "outputs/gen_a.mp4")
    assert hashlib.sha256(b"".join(store.iter_bytes("outputs/gen_a.mp4"))).hexdigest() == digest
    store.delete("outputs/gen_a.mp4")
    store.delete("outputs/gen_a.mp4")
    assert not store.exists("outputs/gen_a.mp4")
    assert store.key_of(store.location("outputs/gen_a.mp4")) == "outputs/gen_a.mp4"
    assert store.key_of("/somewhere/else.mp4") is None and store.key_of("s3://other-bucket/x.mp4") is None


def test_only_per_request_upload_folders_are_discarded(store: Storage, tmp_path: Path) -> None:
    for key in ("uploads/req_1/photo.png", "uploads/req_1/audio.wav", "uploads/req_2/photo.png", "outputs/g.mp4"):
        src, _ = _file(tmp_path / "work" / key.replace("/", "_"), 10)
        store.put_file(src, key)
    assert store.discard_staged_uploads(store.location("uploads/req_1/photo.png"))
    assert not store.exists("uploads/req_1/photo.png") and not store.exists("uploads/req_1/audio.wav")
    assert store.exists("uploads/req_2/photo.png")
    # A user's own file (CLI), an output and a folder that is not a request's staging dir: never touched.
    user_photo, _ = _file(tmp_path / "mine" / "photo.png", 10)
    for location in (str(user_photo), store.location("outputs/g.mp4")):
        assert not store.discard_staged_uploads(location)
    assert user_photo.exists() and store.exists("outputs/g.mp4")


def test_inputs_in_the_bucket_are_fetched_for_a_run(store: Storage, tmp_path: Path) -> None:
    src, digest = _file(tmp_path / "work" / "photo.png", 5000)
    store.put_file(src, "uploads/req_9/photo.png")
    local = store.local_input(store.location("uploads/req_9/photo.png"), tmp_path / "fetched")
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    assert (local.parent == tmp_path / "fetched") == isinstance(store, S3Storage)  # local files are used in place


def test_a_cli_out_file_stays_a_local_file_whatever_the_store(store: Storage, tmp_path: Path) -> None:
    out = tmp_path / "mine" / "video.mp4"
    out.parent.mkdir()
    target = store.output_target(str(out), work_dir=tmp_path / "work")
    assert target.path == out and target.staging_dir == out.parent and target.storage is None
    target.check_writable()
    finished, digest = _file(out.parent / ".video.mp4.1234.signed.part.mp4", 100)
    target.publish(finished)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest and not finished.exists()
    managed = store.output_target(store.location("outputs/gen_1.mp4"), work_dir=tmp_path / "work")
    assert (managed.path is None) == isinstance(store, S3Storage)
    assert managed.staging_dir == (tmp_path / "work" if isinstance(store, S3Storage) else tmp_path / "data" / "outputs")


def test_an_unreachable_bucket_is_a_clean_503_not_a_traceback(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(
        data_dir=tmp_path,
        storage_url="s3://nowhere/x",
        s3_endpoint_url=dead,
        s3_region="us-east-1",
        s3_access_key_id="a",
        s3_secret_access_key="b",
    )
    store = open_storage(settings)
    src, _ = _file(tmp_path / "v.mp4", 10)
    for call in (store.check, lambda: store.put_file(src, "outputs/v.mp4"), lambda: store.size("outputs/v.mp4")):
        with pytest.raises(ObjectStorageUnavailable) as info:
            call()
        problem = describe(info.value)
        assert problem.http_status == 503 and problem.code == "object_storage_unavailable"
        assert problem.headers["Retry-After"] and "127.0.0.1" not in problem.message  # no internals shown
    assert src.exists()  # a failed upload consumes nothing


@pytest.mark.parametrize("url", ["file:///tmp/x", "s3://", "s3:///prefix", "/var/provatar", "S3://b"])
def test_a_storage_url_that_is_not_s3_bucket_prefix_is_refused_at_start(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PROVATAR_STORAGE_URL"):
        Settings(data_dir=tmp_path, storage_url=url)


def test_sweep_deletes_bucket_uploads_no_unfinished_job_needs(s3_server: S3Server, tmp_path: Path) -> None:
    from service import job_state
    from service.models import JobStatus
    from service.pipeline import create_generation
    from service.runtime import Runtime, initialize
    from service.sweep import sweep_stale_files

    settings = Settings(data_dir=tmp_path / "data", **s3_server.settings(s3_server.new_bucket()))
    initialize(settings)
    rt = Runtime(settings)
    store = rt.storage
    for key in ("uploads/req_queued/photo.png", "uploads/req_failed/photo.png", "uploads/det_orphan/clip.mp4"):
        src, _ = _file(tmp_path / "work" / key.replace("/", "_"), 10)
        store.put_file(src, key)
    ids = {}
    for name in ("req_queued", "req_failed"):
        at = store.location(f"uploads/{name}/photo.png")
        ids[name] = create_generation(
            rt,
            subject_id="s",
            purpose="p",
            client_id="c",
            photo_path=at,
            audio_path=at,
            output_path=None,
            request_id=name,
        ).id
    job_state.move(rt, ids["req_failed"], JobStatus.failed, error_code="interrupted")
    swept = sweep_stale_files(rt, older_than=-5)  # everything counts as stale: only "in use" protects
    assert sorted(swept.objects) == ["uploads/det_orphan/clip.mp4", "uploads/req_failed/photo.png"]
    assert store.exists("uploads/req_queued/photo.png")
    rt.close()


def test_a_staged_output_replaces_the_output_only_when_committed(store: Storage, tmp_path: Path) -> None:
    """A run stages its finished video first (the bucket upload) and makes it the output in one quick step inside the
    completion's transaction: until then the output keeps its old bytes, and a run that never commits (its lease
    was lost, it failed) leaves nothing behind."""
    key = "outputs/gen_x.mp4"
    old, old_sha = _file(tmp_path / "old.mp4", 1000)
    store.put_file(old, key)
    target = store.output_target(store.location(key), work_dir=tmp_path / "work")
    target.check_writable()

    lost, _ = _file(target.staging_dir / ".gen_x.mp4.aaaa.signed.part.mp4", 2000)
    staged = target.stage(lost)
    assert hashlib.sha256(b"".join(store.iter_bytes(key))).hexdigest() == old_sha  # not the output yet
    staged.discard()  # this run lost its lease: its video never becomes the output
    assert hashlib.sha256(b"".join(store.iter_bytes(key))).hexdigest() == old_sha
    if staged.staged_key is not None:
        assert not store.exists(staged.staged_key)

    won, won_sha = _file(target.staging_dir / ".gen_x.mp4.bbbb.signed.part.mp4", 3000)
    staged = target.stage(won)
    staged.commit()
    staged.discard()  # a no-op once committed
    assert hashlib.sha256(b"".join(store.iter_bytes(key))).hexdigest() == won_sha
    if staged.staged_key is not None:
        assert not store.exists(staged.staged_key)  # moved, not copied


def test_sweep_deletes_staged_outputs_a_killed_run_left_in_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    from service.runtime import Runtime, initialize
    from service.sweep import sweep_stale_files

    settings = Settings(data_dir=tmp_path / "data", **s3_server.settings(s3_server.new_bucket()))
    initialize(settings)
    rt = Runtime(settings)
    src, _ = _file(tmp_path / "staged.mp4", 10)
    rt.storage.put_file(src, "staging/.gen_y.mp4.cccc.signed.part.mp4")
    assert sweep_stale_files(rt, older_than=3600).objects == []  # a run may still be about to commit it
    assert sweep_stale_files(rt, older_than=-5).objects == ["staging/.gen_y.mp4.cccc.signed.part.mp4"]
    rt.close()
