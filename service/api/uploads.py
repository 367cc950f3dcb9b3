"""Streaming uploads to disk under a size limit, so a huge body is refused without filling memory or disk; and
handing a job's staged uploads to the shared storage its worker (maybe on another machine) reads them from."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fastapi import UploadFile

from service.errors import InvalidInput, PayloadTooLarge
from service.storage import UPLOADS_PREFIX, Storage

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EMPTY_CODES = {"photo": "invalid_image", "audio": "invalid_audio", "file": "invalid_video"}


def safe_suffix(filename: str | None, default: str) -> str:
    suffix = Path(filename or "").suffix.lower()
    suffix = _SAFE.sub("", suffix)[:8]
    return suffix if suffix.startswith(".") and len(suffix) > 1 else default


async def read_upload(upload: UploadFile, limit: int, field: str) -> bytes:
    """An uploaded file's bytes, refused when larger than `limit` (413) or empty (400); reads at most limit + 1."""
    data = await upload.read(limit + 1)
    await upload.close()
    if len(data) > limit:
        raise PayloadTooLarge(f"{field} is larger than the {limit // (1 << 20)} MiB upload limit")
    if not data:
        raise InvalidInput(f"{field} is empty (0 bytes)", code="invalid_image" if field == "photo" else "invalid_input")
    return data


async def save_upload(upload: UploadFile, dest: Path, *, max_bytes: int, field: str) -> Path:
    """Copy an upload to `dest`; refuse empty or oversized files, leaving nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    try:
        with open(dest, "wb") as out:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"{field} is larger than the {max_bytes // (1 << 20)} MiB upload limit")
                out.write(chunk)
        if size == 0:
            raise InvalidInput(f"{field} is empty (0 bytes)", code=_EMPTY_CODES.get(field, "invalid_input"))
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        await upload.close()
    os.chmod(dest, 0o600)
    return dest


def share_staged_uploads(storage: Storage, files: list[Path]) -> list[str]:
    """The locations a job records for its uploaded `files` (all in one staging dir `req_...`): the files themselves
    when the storage is this data dir, else objects under `uploads/req_.../` in the bucket (the local copies go).

    On failure nothing stays in the bucket; the caller still owns (and removes) the local staging dir."""
    locations: list[str] = []
    staged: list[str] = []
    try:
        for f in files:
            key = storage.key_of(str(f))
            if key is None or storage.local_path(key) is None:
                key = f"{UPLOADS_PREFIX}{f.parent.name}/{f.name}"
                storage.put_file(f, key)
                staged.append(key)
            locations.append(storage.location(key))
    except BaseException:
        for key in staged:
            storage.delete(key)
        raise
    if staged:
        shutil.rmtree(files[0].parent, ignore_errors=True)
    return locations
