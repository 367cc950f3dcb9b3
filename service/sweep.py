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
from service.run_files import PART_GLOBS
from service.runtime import Runtime
from service.storage import STAGED_OUTPUTS_PREFIX, UPLOADS_PREFIX, S3Storage

log = logging.getLogger("provatar.sweep")
# The staging directories the API creates under uploads_dir (generations, detections, live streams).
STAGING_PREFIXES = ("req_", "det_", "live_")


@dataclass
class SweepResult:
    parts: list[Path] = field(default_factory=list)
    uploads: list[Path] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)  # keys of stale staged uploads in the bucket


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.lstat().st_mtime < cutoff
    except OSError:  # gone in the meantime
        return False


def discard_run_leftovers(output: Path) -> list[Path]:
    """Delete the temp files a killed run left beside its output `output` (a CLI `-o` path, which the periodic
    sweep never visits): only hidden files named after the output and of the run's temp patterns
    (`.NAME.TOKEN.unsigned.part.mp4`, ...), never the output itself or anything else in that folder."""
    removed = []
    folder = output.parent
    if not folder.is_dir():
        return removed
    for part in folder.iterdir():
        # `.NAME.TOKEN.unsigned.part.mp4`, and the encoder's own temp of that (`..NAME.TOKEN...part`)
        ours = part.name.startswith(".") and part.name.lstrip(".").startswith(f"{output.name}.")
        if not ours or part.is_symlink() or not part.is_file() or not any(part.match(g) for g in PART_GLOBS):
            continue
        try:
            part.unlink()
            removed.append(part)
        except OSError:
            log.warning("could not remove the temp file %s of a stopped run", part, exc_info=True)
    return removed


def sweep_stale_files(rt: Runtime, *, older_than: float | None = None) -> SweepResult:
    """Delete stale `*.part` files in the outputs dir and the staged uploads no unfinished job needs."""
    older_than = rt.settings.stale_file_seconds if older_than is None else older_than
    cutoff = time.time() - older_than
    result = SweepResult()
    # Runs stage beside a local output, or in the work dir when the output goes to a bucket (and fetch inputs there).
    for folder in (rt.settings.outputs_dir, rt.settings.work_dir):
        if not folder.is_dir():
            continue
        for pattern in PART_GLOBS:
            for part in folder.glob(pattern):
                if part.is_symlink() or not _older(part, cutoff):
                    continue
                try:
                    if part.is_dir():  # fetched inputs of a killed run
                        shutil.rmtree(part)
                    else:
                        part.unlink()
                    result.parts.append(part)
                except OSError:
                    log.warning("could not remove the stale temp file %s", part, exc_info=True)
    with rt.session() as session:
        in_use_locations = session.exec(
            select(Generation.photo_path).where(col(Generation.status).in_([JobStatus.queued, JobStatus.running]))
        ).all()
    if isinstance(rt.storage, S3Storage):
        result.objects = _sweep_bucket_uploads(rt.storage, in_use_locations, older_than)
    uploads = rt.settings.uploads_dir
    if uploads.is_dir():
        in_use = {Path(p).resolve().parent for p in in_use_locations if "://" not in p}
        for staging in uploads.iterdir():
            if not staging.name.startswith(STAGING_PREFIXES) or staging.is_symlink() or not staging.is_dir():
                continue
            if staging.resolve() in in_use or not _older(staging, cutoff):
                continue
            shutil.rmtree(staging, ignore_errors=True)
            result.uploads.append(staging)
    if result.parts or result.uploads or result.objects:
        log.info(
            "swept %d stale temp files, %d upload dirs and %d uploaded objects",
            len(result.parts),
            len(result.uploads),
            len(result.objects),
        )
    return result


def _sweep_bucket_uploads(storage: S3Storage, in_use_locations: list[str], older_than: float) -> list[str]:
    """Delete staged uploads in the bucket that no queued or running job needs (their job's worker died before
    discarding them, or the bucket was unreachable then)."""
    keep = set()
    for location in in_use_locations:
        key = storage.key_of(location)
        if key is not None:
            keep.add(key.rsplit("/", 1)[0] + "/")
    swept = []
    for key in storage.list_older(UPLOADS_PREFIX, older_than):
        folder = key.rsplit("/", 1)[0] + "/"
        if folder[len(UPLOADS_PREFIX) :].startswith(STAGING_PREFIXES) and folder not in keep:
            storage.delete(key)
            swept.append(key)
    # Finished videos a run uploaded but never made the output (it was killed between the upload and the commit).
    for key in storage.list_older(STAGED_OUTPUTS_PREFIX, older_than):
        storage.delete(key)
        swept.append(key)
    return swept
