"""Remove what a killed process left behind: half-written videos (`*.part`) in the outputs dir and the uploads of
jobs that are finished (or were never created).

A normal run cleans up after itself; this is for SIGKILL, power loss and OOM kills, after which nothing else would
ever delete those files (uploads are personal data: photos and voices). Runs at worker start and periodically.
Only files older than `older_than` seconds are touched, so a job that another process is running right now keeps
its temp files; the uploads of queued and running jobs are kept whatever their age (they are needed to run them).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlmodel import col, select

from service.models import Generation, JobStatus
from service.pipeline import PART_GLOBS
from service.runtime import Runtime

log = logging.getLogger("provatar.sweep")
# The staging directories the API creates under uploads_dir (generations, detections, live streams).
STAGING_PREFIXES = ("req_", "det_", "live_")


@dataclass
class SweepResult:
    parts: list[Path] = field(default_factory=list)
    uploads: list[Path] = field(default_factory=list)


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except OSError:  # gone in the meantime
        return False


def sweep_stale_files(rt: Runtime, *, older_than: float | None = None) -> SweepResult:
    """Delete stale `*.part` files in the outputs dir and the staged uploads no unfinished job needs."""
    older_than = rt.settings.stale_file_seconds if older_than is None else older_than
    cutoff = time.time() - older_than
    result = SweepResult()
    outputs = rt.settings.outputs_dir
    if outputs.is_dir():
        for pattern in PART_GLOBS:
            for part in outputs.glob(pattern):
                if part.is_file() and not part.is_symlink() and _older(part, cutoff):
                    try:
                        part.unlink()
                        result.parts.append(part)
                    except OSError:
                        log.warning("could not remove the stale temp file %s", part, exc_info=True)
    uploads = rt.settings.uploads_dir
    if uploads.is_dir():
        with rt.session() as session:
            in_use = {
                Path(p).resolve().parent
                for p in session.exec(
                    select(Generation.photo_path).where(
                        col(Generation.status).in_([JobStatus.queued, JobStatus.running])
                    )
                ).all()
            }
        for staging in uploads.iterdir():
            if not staging.name.startswith(STAGING_PREFIXES) or staging.is_symlink() or not staging.is_dir():
                continue
            if staging.resolve() in in_use or not _older(staging, cutoff):
                continue
            shutil.rmtree(staging, ignore_errors=True)
            result.uploads.append(staging)
    if result.parts or result.uploads:
        log.info("swept %d stale temp files and %d upload dirs", len(result.parts), len(result.uploads))
    return result
