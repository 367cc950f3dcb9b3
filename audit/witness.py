"""A witness of the audit log's signed checkpoints, kept outside the database.

The signed checkpoint in the database proves the rows match what the key signed, but whoever can write the
database can also put back an older, validly signed checkpoint with the rows it covered (a rollback), or empty
both tables: the log then verifies as a shorter, or empty, log. The witness is an append-only JSON Lines file
(one signed checkpoint per line, `O_APPEND` + fsync) on storage the database's writers cannot reach (another
volume, another machine's mount, a WORM bucket synced from it): `AuditLog.verify()` checks the database against
the newest checkpoint the witness holds, so a rollback or an emptied log is named instead of passing.

Lines are only ever appended after the database commit, so the witness may lag the database by the appends of a
crash, never lead it. Each line carries the Ed25519 signature: a forged line fails like a forged checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import WitnessMismatch, WitnessUnavailable
from audit.models import AuditCheckpoint

# The fields a witness line keeps: the signed ones (the frontier is recomputed by the verifier, not needed here).
_FIELDS = ("origin", "kind", "size", "head_hash", "root_hash", "signed_at", "key_id", "signature")


@dataclass(frozen=True)
class WitnessedCheckpoint:
    line: int
    checkpoint: AuditCheckpoint


class FileWitness:
    """Append each signed checkpoint to `path`; read back the newest one for an origin."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, checkpoint: AuditCheckpoint) -> None:
        """Append `checkpoint` as one line and fsync it. Raises WitnessUnavailable when the file cannot be written."""
        record = {name: getattr(checkpoint, name) for name in _FIELDS}
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)  # one write of a short line: O_APPEND keeps concurrent writers' lines whole
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise WitnessUnavailable(f"cannot append to the audit witness {self.path}: {exc.strerror or exc}") from exc

    def exists(self) -> bool:
        return self.path.is_file()

    def newest(self, origin: str) -> WitnessedCheckpoint | None:
        """The largest checkpoint witnessed for `origin` (None when the file has none). A torn last line (a crash
        mid-write) is skipped; any other unreadable line is an error, named by its line number."""
        best: WitnessedCheckpoint | None = None
        for witnessed in self.checkpoints(origin):
            if best is None or witnessed.checkpoint.size > best.checkpoint.size:
                best = witnessed
        return best

    def last_size(self, origin: str) -> int | None:
        """Size of the last checkpoint appended for `origin`, from the file's end only (None when there is none).
        Falls back to reading the whole file when the end holds no line of `origin`."""
        try:
            with open(self.path, "rb") as fp:
                fp.seek(0, os.SEEK_END)
                end = fp.tell()
                fp.seek(max(0, end - _TAIL_BYTES))
                tail = fp.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise WitnessUnavailable(f"cannot read the audit witness {self.path}: {exc.strerror or exc}") from exc
        lines = tail.split(b"\n")
        if end > _TAIL_BYTES:
            lines = lines[1:]  # the first is most likely cut by the seek
        for text in reversed(lines):
            try:
                fields = json.loads(text)
                if fields.get("origin") == origin and isinstance(fields.get("size"), int):
                    return int(fields["size"])
            except (ValueError, AttributeError):
                continue  # blank, torn or foreign
        newest = self.newest(origin) if end > _TAIL_BYTES else None
        return newest.checkpoint.size if newest is not None else None

    def checkpoints(self, origin: str) -> list[WitnessedCheckpoint]:
        """Every checkpoint witnessed for `origin`, in file order (an evidence bundle carries them all). Same
        reading rules as `newest`; signatures are not checked here (the caller holds the key)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise WitnessUnavailable(f"cannot read the audit witness {self.path}: {exc.strerror or exc}") from exc
        lines = raw.split(b"\n")
        found: list[WitnessedCheckpoint] = []
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                fields: dict[str, Any] = json.loads(text)
                checkpoint = AuditCheckpoint(**{name: fields[name] for name in _FIELDS}, frontier=[])
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    continue  # the torn tail of an interrupted append (no newline after it)
                raise WitnessMismatch(f"line {number} of the audit witness {self.path} is unreadable: {exc}") from exc
            if checkpoint.origin == origin:
                found.append(WitnessedCheckpoint(number, checkpoint))
        return found


# How much of the witness file's end a health check reads: enough for many lines, so it costs the same for any size.
_TAIL_BYTES = 64 << 10


@dataclass(frozen=True)
class WitnessHealth:
    """Whether the witness keeps up with the database: `ok`, and when not, a snake_case `code` and a `message`.

    Cheap enough for every readiness probe: it reads the end of the file only and checks no signature (`verify()`
    does that)."""

    ok: bool
    configured: bool
    checkpoint_size: int
    witnessed_size: int | None = None
    code: str | None = None
    message: str | None = None


def check_witness(witness: FileWitness | None, checkpoint: AuditCheckpoint | None) -> WitnessHealth:
    """Compare the database's signed `checkpoint` with the last line `witness` holds for its origin.

    Not ok when the file cannot be read or appended to (the next append will raise WitnessUnavailable), when it lags
    the database (an append's witnessing failed: a rollback past that entry would go unnoticed), when it is ahead (the
    database was rolled back) or when it holds nothing although the log has a checkpoint."""
    size = checkpoint.size if checkpoint is not None else 0
    if witness is None:
        return WitnessHealth(ok=True, configured=False, checkpoint_size=size)

    def failed(code: str, message: str, witnessed: int | None = None) -> WitnessHealth:
        return WitnessHealth(False, True, size, witnessed, code, message)

    existing = witness.path  # the file, or the nearest directory above it that record() would create it in
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK) or (existing != witness.path and not existing.is_dir()):
        return failed(
            "witness_unavailable", f"the audit witness {witness.path} cannot be written: the next append fails"
        )
    try:
        last = witness.last_size(checkpoint.origin) if checkpoint is not None else None
    except (WitnessUnavailable, OSError) as exc:
        return failed("witness_unavailable", f"the audit witness {witness.path} cannot be read: {exc}")
    if checkpoint is None:
        if last is not None:
            return failed("witness_ahead", "the log is empty but the witness holds checkpoints: it was emptied", last)
        return WitnessHealth(ok=True, configured=True, checkpoint_size=0)
    if last is None:
        return failed("witness_missing", f"the log has {size} entries but the witness holds no checkpoint of them")
    if last < size:
        return failed(
            "witness_lagging",
            f"the witness holds checkpoints up to {last} of {size} entries: witnessing failed for the newest",
            last,
        )
    if last > size:
        return failed(
            "witness_ahead",
            f"the witness holds a checkpoint of {last} entries, the log {size}: it was rolled back",
            last,
        )
    return WitnessHealth(ok=True, configured=True, checkpoint_size=size, witnessed_size=last)
