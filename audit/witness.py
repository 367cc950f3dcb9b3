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
