"""Where finished videos and staged uploads live: a directory on this machine (default) or an S3 bucket
(`PROVATAR_STORAGE_URL=s3://bucket/prefix`), so that workers on other machines can write what the API serves.

Objects are named by keys relative to the store (`outputs/gen_x.mp4`, `uploads/req_x/photo.png`); the database
records a *location*, the string `location(key)` gives: an absolute path for local storage (what earlier releases
recorded, so old rows keep working) or `s3://bucket/prefix/key`. `key_of(location)` is the way back; it is None for
a location outside the store, e.g. a file the CLI user named with `--out`, which stays a plain local file.

Both stores keep the rule the pipeline always had: an output is only ever replaced by a finished, signed, verified
file in one step (os.replace / a completed S3 upload), never deleted or left half-written when a run fails.
Reads stream in chunks (CHUNK_BYTES); nothing here reads a whole object into memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import ObjectStorageUnavailable, OutputNotWritable

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("provatar.storage")
CHUNK_BYTES = 1 << 20
# Uploads are staged per request under this prefix; the whole `uploads/req_.../` folder goes once its job ends.
UPLOADS_PREFIX = "uploads/"
OUTPUTS_PREFIX = "outputs/"
# Finished videos uploaded by a run but not yet made the output (OutputTarget.stage); the sweep removes old ones.
STAGED_OUTPUTS_PREFIX = "staging/"
# boto3 switches to multipart (parallel parts, retried one by one) above this size; videos are often bigger.
MULTIPART_THRESHOLD = 8 * 1024 * 1024


def check_output_path(out: Path, *, create_parent: bool = False) -> None:
    """Refuse an output path this run could not write, before any work: a directory, a missing or read-only parent.

    Probes by creating (and removing) a hidden temp file beside the target, which is what the run will do: this
    catches read-only mounts, permissions, a full inode table and a parent that is a file. Raises OutputNotWritable.
    """
    if out.is_dir():
        raise OutputNotWritable(f"the output {out} is a directory; name a file such as {out / 'video.mp4'}")
    parent = out.parent
    if create_parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot create the output directory {parent}: {exc.strerror or exc}") from exc
    if not parent.is_dir():
        raise OutputNotWritable(f"the output directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=parent)
    except OSError as exc:
        raise OutputNotWritable(f"cannot write to the output directory {parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


@dataclass(frozen=True)
class OutputTarget:
    """Where one run's video goes. Temp files are written in `staging_dir` (beside a local output, so publishing is
    an atomic rename on one filesystem); `publish` turns the finished file into the output in one step."""

    name: str
    staging_dir: Path
    storage: Storage | None  # None: a plain local file outside the store (`provatar generate --out FILE`)
    key: str | None
    path: Path | None
    create_parent: bool = False

    def check_writable(self) -> None:
        """Fail before any rendering when the output could not be written (OutputNotWritable / storage 503)."""
        if self.path is not None:
            check_output_path(self.path, create_parent=self.create_parent)
            return
        assert self.storage is not None
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self.storage.check()

    def stage(self, finished: Path) -> StagedOutput:
        """Get `finished` (a complete, signed file in `staging_dir`) ready to become the output, doing the slow part
        now: a bucket upload under a run-unique staging key. `StagedOutput.commit` then makes it the output in one
        quick step (a rename, or a copy within the bucket), which the pipeline runs inside the completion's
        transaction so that only the run that records the completion replaces the output."""
        if self.path is not None:
            return StagedOutput(self, local=finished)
        assert self.storage is not None and self.key is not None
        staged_key = f"{STAGED_OUTPUTS_PREFIX}{finished.name}"
        self.storage.put_file(finished, staged_key)
        return StagedOutput(self, staged_key=staged_key)

    def publish(self, finished: Path) -> None:
        """Make `finished` the output at once (stage + commit); the file is consumed."""
        self.stage(finished).commit()


@dataclass
class StagedOutput:
    """A finished video staged by `OutputTarget.stage`: `commit` makes it the output, `discard` drops it."""

    target: OutputTarget
    local: Path | None = None  # a local target: the finished file beside it
    staged_key: str | None = None  # a bucket target: the uploaded object awaiting its copy to the output key
    committed: bool = False

    def commit(self) -> None:
        target = self.target
        if self.local is not None:
            assert target.path is not None
            try:
                os.replace(self.local, target.path)
            except OSError as exc:
                raise OutputNotWritable(f"cannot write the output {target.path}: {exc.strerror or exc}") from exc
        else:
            assert target.storage is not None and target.key is not None and self.staged_key is not None
            target.storage.move(self.staged_key, target.key)
        self.committed = True

    def discard(self) -> None:
        """Drop what was staged and never committed; never raises (the sweep removes what this could not)."""
        if self.committed or self.staged_key is None or self.target.storage is None:
            return
        try:
            self.target.storage.delete(self.staged_key)
        except Exception:
            log.warning("could not delete the staged output %s", self.staged_key, exc_info=True)


class Storage(ABC):
    """A flat namespace of objects under string keys."""

    kind: str

    @abstractmethod
    def location(self, key: str) -> str:
        """The string the database records for `key`."""

    @abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key a recorded location names, or None when it is not in this store."""

    @abstractmethod
    def put_file(self, src: Path, key: str) -> None:
        """Store the local file `src` under `key`, replacing what is there only once the new object is complete.
        `src` is consumed (moved or deleted)."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes; None when there is none."""

    @abstractmethod
    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes `start`..`end` (inclusive; None = to the end) in chunks of at most CHUNK_BYTES."""

    @abstractmethod
    def download(self, key: str, dest: Path) -> Path:
        """Copy the object to the local file `dest` (streamed)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""

    @abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Make the object at `src` the one at `dst` (replacing it), and remove `src`."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a folder, ending in '/'); returns how many."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The object as a file on this machine (served with sendfile and Range support), or None."""

    @abstractmethod
    def check(self) -> dict[str, Any]:
        """Reachable and writable? Raises (OutputNotWritable, ObjectStorageUnavailable, OSError) if not."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def output_target(self, location: str, *, work_dir: Path) -> OutputTarget:
        """Where a run writes the output recorded as `location`."""
        key = self.key_of(location)
        local = self.local_path(key) if key is not None else Path(location)
        if local is not None:
            # The store's own outputs folder is created on demand; a user's --out folder must already exist.
            managed = key is not None and key.startswith(OUTPUTS_PREFIX) and key.count("/") == 1
            return OutputTarget(local.name, local.parent, None, None, local, create_parent=managed)
        assert key is not None
        return OutputTarget(key.rsplit("/", 1)[-1], work_dir, self, key, None)

    def delete_location(self, location: str) -> None:
        """Delete what a recorded location names: an object of this store, or a plain local file."""
        key = self.key_of(location)
        if key is not None:
            self.delete(key)
        else:
            Path(location).unlink(missing_ok=True)

    def local_input(self, location: str, dest_dir: Path) -> Path:
        """A local file with the bytes of the input recorded as `location`: the file itself when it is on this
        machine, else a copy fetched into `dest_dir` (the caller deletes it)."""
        key = self.key_of(location)
        local = self.local_path(key) if key is not None else Path(location)
        if local is not None:
            return local
        assert key is not None
        dest_dir.mkdir(parents=True, exist_ok=True)
        return self.download(key, dest_dir / key.rsplit("/", 1)[-1])

    def discard_staged_uploads(self, location: str) -> bool:
        """Delete the per-request upload folder (`uploads/req_.../`) that holds the input at `location`. Files
        elsewhere (a path a CLI user passed in) are never touched. Returns whether a folder was deleted."""
        key = self.key_of(location)
        if key is None or not key.startswith(UPLOADS_PREFIX):
            return False
        folder = key[len(UPLOADS_PREFIX) :].split("/", 1)[0]
        if not folder.startswith("req_") or "/" not in key[len(UPLOADS_PREFIX) :]:
            return False
        self.delete_prefix(f"{UPLOADS_PREFIX}{folder}/")
        return True


class LocalStorage(Storage):
    """Files under one directory (the data dir: `outputs/`, `uploads/`), as provatar always stored them."""

    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} leaves the storage root")
        return path

    def location(self, key: str) -> str:
        return str(self.root / key)

    def key_of(self, location: str) -> str | None:
        if "://" in location:
            return None
        path = Path(location).resolve()
        root = self.root.resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else None

    def put_file(self, src: Path, key: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)  # same filesystem when src was staged beside it; atomic either way on one fs

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with open(self._path(key), "rb") as fh:
            fh.seek(start)
            left = None if end is None else end - start + 1
            while left is None or left > 0:
                block = fh.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                if not block:
                    return
                if left is not None:
                    left -= len(block)
                yield block

    def download(self, key: str, dest: Path) -> Path:
        shutil.copyfile(self._path(key), dest)
        return dest

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        dest = self._path(dst)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(src), dest)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir() or folder.is_symlink():
            return 0
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def check(self) -> dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".health.", suffix=".part", dir=self.root)  # writable at all?
        os.close(fd)
        os.unlink(probe)
        return {"kind": self.kind, "root": str(self.root), "free_bytes": shutil.disk_usage(self.root).free}


class S3Storage(Storage):
    """Objects in an S3 bucket (AWS or any S3-compatible server), under an optional key prefix."""

    kind = "s3"

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client
        self._errors = _boto_errors()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        import boto3  # only where S3 is configured: the CLI's start and local installs never load it
        from botocore.config import Config

        assert settings.storage_url is not None
        bucket, _, prefix = settings.storage_url[len("s3://") :].partition("/")
        creds: dict[str, Any] = {}
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            creds = {
                "aws_access_key_id": settings.s3_access_key_id,
                "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
            }
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            # Short connect timeout: a dead endpoint must fail a request (503) or a readiness probe quickly.
            config=Config(connect_timeout=3, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}),
            **creds,
        )
        return cls(bucket, prefix, client)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _unavailable(self, what: str, exc: Exception) -> ObjectStorageUnavailable:
        log.warning("object storage: %s failed: %s", what, exc)
        return ObjectStorageUnavailable(f"object storage: {what} failed ({type(exc).__name__})")

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def key_of(self, location: str) -> str | None:
        head = f"s3://{self.bucket}/{self.prefix}"
        return location[len(head) :] if location.startswith(head) else None

    def put_file(self, src: Path, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        extra = {"ContentType": "video/mp4"} if key.endswith(".mp4") else {}
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
        try:
            self.client.upload_file(str(src), self.bucket, self._key(key), ExtraArgs=extra, Config=config)
        except self._errors as exc:
            raise self._unavailable(f"storing {key}", exc) from exc
        src.unlink(missing_ok=True)

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            if _status(exc) == 404:
                return None
            raise self._unavailable(f"looking up {key}", exc) from exc
        return int(head["ContentLength"])

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if start or end is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:  # asked now, not at the first chunk: a failure is still a clean 503 before any byte is sent
            body = self.client.get_object(**args)["Body"]
        except self._errors as exc:
            raise self._unavailable(f"reading {key}", exc) from exc
        return _chunks(body)

    def download(self, key: str, dest: Path) -> Path:
        try:
            self.client.download_file(self.bucket, self._key(key), str(dest))
        except self._errors as exc:
            raise self._unavailable(f"fetching {key}", exc) from exc
        return dest

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except self._errors as exc:
            raise self._unavailable(f"deleting {key}", exc) from exc

    def move(self, src: str, dst: str) -> None:
        # A copy inside the bucket (server side; boto3's managed copy does it in parts above 5 GB), then the delete.
        try:
            self.client.copy({"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst))
        except self._errors as exc:
            raise self._unavailable(f"storing {dst}", exc) from exc
        self.delete(src)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    count += len(keys)
        except self._errors as exc:
            raise self._unavailable(f"deleting {prefix}", exc) from exc
        return count

    def list_older(self, prefix: str, older_than: float) -> Iterator[str]:
        """Keys under `prefix` last modified more than `older_than` seconds ago (for sweeping)."""
        cutoff = time.time() - older_than
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", []):
                    if obj["LastModified"].timestamp() < cutoff:
                        yield obj["Key"][len(self.prefix) :]
        except self._errors as exc:
            raise self._unavailable(f"listing {prefix}", exc) from exc

    def local_path(self, key: str) -> Path | None:
        return None

    def check(self) -> dict[str, Any]:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            raise self._unavailable(f"reaching the bucket {self.bucket}", exc) from exc
        return {"kind": self.kind, "bucket": self.bucket, "prefix": self.prefix}


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(code) if code else None


def open_storage(settings: Settings) -> Storage:
    """The store the settings name: S3 for `PROVATAR_STORAGE_URL=s3://...`, else the data dir."""
    if settings.storage_url:
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.data_dir)
