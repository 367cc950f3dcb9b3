"""Reading an evidence bundle defensively: the archive may be hostile (cut short, corrupt, with members that declare
any size or lines of any length, or fields of the wrong type). Every read is bounded, every line streamed, every field
type-checked; what cannot be read raises ArchiveCorrupt (archive level) or ValueError (a field), never anything else.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from audit.bundle import BUNDLE_FORMAT, CHECKPOINT_FIELDS
from audit.models import AuditCheckpoint

# Bounds on what is read into memory at once (a hostile archive can declare anything).
MAX_MANIFEST_BYTES = 64 << 20
MAX_SMALL_MEMBER_BYTES = 64 << 10
MAX_LINE_BYTES = 16 << 20
# What a corrupt archive raises while a member is read (CRC mismatch, truncated deflate stream...).
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class ArchiveCorrupt(Exception):
    """The archive, or one of its members, cannot be read; the message says which and why."""


class BundleArchive:
    """The members of a bundle zip, read with bounds."""

    def __init__(self, fp: IO[bytes]) -> None:
        try:
            self.zf = zipfile.ZipFile(fp)
            self.names = [info.filename for info in self.zf.infolist()]
        except (*ARCHIVE_ERRORS, ValueError, OSError) as exc:
            raise ArchiveCorrupt(f"not a readable zip archive ({exc})") from exc

    def read(self, name: str, limit: int) -> bytes:
        """A whole member, at most `limit` bytes. KeyError when absent; ArchiveCorrupt when unreadable."""
        info = self.zf.getinfo(name)
        if info.file_size > limit:
            raise ArchiveCorrupt(f"{name} declares {info.file_size} bytes, more than the {limit} allowed")
        try:
            with self.zf.open(info) as fp:
                data = fp.read(limit + 1)
        except ARCHIVE_ERRORS as exc:
            raise ArchiveCorrupt(f"{name} cannot be read from the archive ({exc})") from exc
        if len(data) > limit:
            raise ArchiveCorrupt(f"{name} is larger than the {limit} bytes allowed")
        return data

    def lines(self, name: str) -> Iterator[tuple[int, bytes]]:
        """(line number, line) for each non-blank line of a member, streamed."""
        try:
            with self.zf.open(name) as fp:
                number = 0
                while True:
                    line = fp.readline(MAX_LINE_BYTES + 1)
                    if not line:
                        return
                    number += 1
                    if len(line) > MAX_LINE_BYTES:
                        raise ArchiveCorrupt(f"line {number} of {name} is longer than {MAX_LINE_BYTES} bytes")
                    if line.strip():
                        yield number, line
        except ARCHIVE_ERRORS as exc:
            raise ArchiveCorrupt(f"{name} cannot be read from the archive ({exc})") from exc

    def digest(self, name: str) -> tuple[str, int]:
        sha = hashlib.sha256()
        length = 0
        try:
            with self.zf.open(name) as fp:
                for block in iter(lambda: fp.read(1 << 20), b""):
                    sha.update(block)
                    length += len(block)
        except ARCHIVE_ERRORS as exc:
            raise ArchiveCorrupt(f"{name} cannot be read from the archive ({exc})") from exc
        return sha.hexdigest(), length


def parse_checkpoint(line: bytes) -> AuditCheckpoint:
    """A checkpoint line, its types checked (the table model does not validate)."""
    fields = json.loads(line)
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    values: dict[str, Any] = {}
    for name in CHECKPOINT_FIELDS:
        if name not in fields:
            raise ValueError(f"no {name}")
        value = fields[name]
        if name == "size":
            value = as_int(value)
            if value < 1:
                raise ValueError(f"size {value} is not positive")
        elif not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        values[name] = value
    for name in ("head_hash", "root_hash"):
        as_hash(values[name])
    return AuditCheckpoint(**values, frontier=[])


def as_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return value


def as_hash(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"{value!r} is not a 64-digit hex SHA-256 hash")
    return bytes.fromhex(value)


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with the manifest's shape (None when it has every member this verifier relies on)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("format") != BUNDLE_FORMAT:
        return f"format {manifest.get('format')!r} is not {BUNDLE_FORMAT} (a bundle of another version or not one)"
    for name, kind in (
        ("origin", str),
        ("created_at", str),
        ("exporter", dict),
        ("entries", int),
        ("checkpoints", dict),
        ("proofs", int),
        ("keys", list),
        ("members", dict),
    ):
        if not isinstance(manifest.get(name), kind) or isinstance(manifest.get(name), bool):
            return f"{name} is missing or not a {kind.__name__}"
    checkpoints = manifest["checkpoints"]
    if not isinstance(checkpoints.get("count"), int) or not isinstance(checkpoints.get("sizes"), list):
        return "checkpoints needs a count and sizes"
    for run in checkpoints["sizes"]:
        if not (
            isinstance(run, list) and len(run) == 2 and all(isinstance(v, int) for v in run) and 1 <= run[0] <= run[1]
        ):
            return f"checkpoint size run {run!r} is not [first, last]"
    newest = checkpoints.get("newest")
    if newest is not None and not (isinstance(newest, dict) and isinstance(newest.get("size"), int)):
        return "checkpoints.newest needs a size"
    for key in manifest["keys"]:
        if not (
            isinstance(key, dict)
            and isinstance(key.get("file"), str)
            and isinstance(key.get("fingerprint"), str)
            and isinstance(key.get("key_ids"), list)
            and all(isinstance(k, str) for k in key["key_ids"])
        ):
            return f"key entry {key!r} needs file, fingerprint and key_ids"
    for name, member in manifest["members"].items():
        if not (
            isinstance(member, dict) and isinstance(member.get("sha256"), str) and isinstance(member.get("bytes"), int)
        ):
            return f"member {name!r} needs sha256 and bytes"
    return None
