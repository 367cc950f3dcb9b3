"""Owner-only file permissions for an installation: the data dir holds face embeddings (the SQLite database), keys
and personal uploads, so nothing in it is for other users of the machine.

New installations are created under umask 077 (directories 0700, files 0600). An existing installation made
world-readable by an older release is tightened at every start, with a logged warning naming each path.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.settings import Settings

log = logging.getLogger("provatar.permissions")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


@contextmanager
def private_umask() -> Iterator[None]:
    """Create files 0600 and directories 0700 inside the block (process-wide umask, restored after)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def sqlite_path(settings: Settings) -> Path | None:
    """The database file when the database is SQLite on disk; None otherwise."""
    url = settings.db_url
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    return Path(url.removeprefix("sqlite:///"))


def private_paths(settings: Settings) -> tuple[list[Path], list[Path]]:
    """(directories, files) that must be owner-only: the data dir and its key, CA, photo and media folders; every
    key file; the SQLite database with its WAL and shared-memory files."""
    data = settings.data_dir
    dirs = [
        data,
        settings.keys_dir,
        settings.pki_dir,
        settings.outputs_dir,
        settings.uploads_dir,
        data / "reference-photos",
    ]
    if settings.audit_witness_path is None:  # a witness elsewhere is on storage its operator set up on purpose
        dirs.append(settings.witness_path.parent)
    files = [p for p in settings.keys_dir.glob("*") if p.is_file()]
    files += [p for p in settings.pki_dir.glob("*.key") if p.is_file()]
    db = sqlite_path(settings)
    if db is not None:
        files += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return dirs, files


def tighten(settings: Settings) -> list[str]:
    """Remove group/other access from the installation's private paths; returns what was changed (each logged as a
    warning: an older release or a hand-made copy left them readable by other users)."""
    dirs, files = private_paths(settings)
    changed: list[str] = []
    for path, mode in [*((d, PRIVATE_DIR) for d in dirs), *((f, PRIVATE_FILE) for f in files)]:
        try:
            current = stat.S_IMODE(path.lstat().st_mode)
        except FileNotFoundError:
            continue
        if path.is_symlink() or not current & _OTHERS:
            continue
        try:
            os.chmod(path, mode)
        except OSError as exc:  # not ours to change (another owner, a read-only mount): say so, keep running
            log.warning("%s is accessible by other users (mode %o) and could not be restricted: %s", path, current, exc)
            continue
        log.warning("%s was accessible by other users (mode %o); restricted to %o", path, current, mode)
        changed.append(str(path))
    return changed
