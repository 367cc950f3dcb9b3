"""The files one generation run writes besides its output, and their removal however the run ends.

Everything is written under temp names in the output's staging dir (beside a local output); the output itself is
only ever replaced by a finished, signed, verified video, and never deleted: one already there survives any failure.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from service.runtime import Runtime
from service.storage import OutputTarget, StagedOutput

__all__ = ["PART_GLOBS", "RunFiles"]

log = logging.getLogger("provatar.pipeline")  # the pipeline's log: these lines are part of its run
# Names of the files a run stages beside its output (hidden, so a half-written video never looks like a result):
# `.{name}.{token}.unsigned.part.mp4`, `.{name}.{token}.signed.part.mp4`, and the encoder's own `.{...}.part`.
# `service.sweep` removes stale ones a killed process left behind.
PART_GLOBS = (".*.part", ".*.part.mp4")


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file this run created; a failure to clean up must never hide the run's own error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the temp file %s", path, exc_info=True)


@dataclass
class RunFiles:
    """One run's temp files: the encoded video before and after signing, the inputs fetched from object storage
    (uploads kept on another machine), and the signed video once staged to become the output."""

    unsigned: Path
    signed: Path
    fetched: Path
    staged: StagedOutput | None = None

    @classmethod
    def for_run(cls, rt: Runtime, out: OutputTarget, generation_id: str) -> RunFiles:
        token = secrets.token_hex(4)
        return cls(
            unsigned=out.staging_dir / f".{out.name}.{token}.unsigned.part.mp4",
            signed=out.staging_dir / f".{out.name}.{token}.signed.part.mp4",
            fetched=rt.settings.work_dir / f".inputs.{generation_id}.{token}.part",
        )

    def remove(self) -> None:
        """Remove what is left, whatever happened; never raises."""
        _unlink_quietly(self.unsigned)
        _unlink_quietly(self.signed)
        if self.staged is not None:
            self.staged.discard()  # an uploaded copy that never became the output (a no-op once committed)
        shutil.rmtree(self.fetched, ignore_errors=True)
