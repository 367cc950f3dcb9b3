"""An installation is the owner's only: `provatar init` makes the data dir and its key/CA folders 0700, the SQLite
database (face embeddings) and every key 0600; an older installation left readable by others is tightened at the
next start, with a warning naming each path."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from service.permissions import private_paths
from service.runtime import Runtime, initialize
from service.settings import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_everything_owner_only_whatever_the_umask(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    old = os.umask(0o022)  # a typical login umask: files 0644, directories 0755
    try:
        with caplog.at_level(logging.WARNING, logger="provatar.permissions"):
            initialize(settings)
    finally:
        os.umask(old)
    assert not caplog.records  # created private from the first byte, not tightened afterwards
    assert os.umask(old) == old  # initialize restored the process umask
    db = settings.data_dir / "provatar.db"
    assert _mode(db) == 0o600
    for directory in (settings.data_dir, settings.keys_dir, settings.pki_dir, settings.outputs_dir,
                      settings.uploads_dir, settings.witness_path.parent):  # fmt: skip
        assert _mode(directory) == 0o700, directory
    keys = [*settings.keys_dir.iterdir(), *settings.pki_dir.glob("*.key")]
    assert len(keys) >= 4  # service secret, JWT key, audit key, CA keys
    for key in keys:
        assert _mode(key) == 0o600, key
    rt = Runtime(settings)
    rt.audit.append(action="test.written", actor="t", outcome="ok")  # the database in WAL mode, open
    for suffix in ("-wal", "-shm"):  # SQLite gives its side files the database's mode
        side = db.with_name(db.name + suffix)
        assert side.exists() and _mode(side) == 0o600, side
    rt.close()


def test_an_existing_world_readable_installation_is_tightened_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    initialize(settings)
    db = settings.data_dir / "provatar.db"
    secret = settings.keys_dir / "service.secret"
    audit_key = settings.keys_dir / "audit_ed25519.pem"
    # What an older release (or a careless copy) left behind.
    for path, mode in ((settings.data_dir, 0o755), (settings.keys_dir, 0o755), (db, 0o644), (secret, 0o644),
                       (audit_key, 0o640)):  # fmt: skip
        path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="provatar.permissions"):
        rt = Runtime(settings)
    rt.close()
    assert _mode(settings.data_dir) == 0o700 and _mode(settings.keys_dir) == 0o700
    assert _mode(db) == 0o600 and _mode(secret) == 0o600 and _mode(audit_key) == 0o600
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for path in (settings.data_dir, db, secret, audit_key):
        assert f"{path} was accessible by other users" in warned, path
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="provatar.permissions"):
        Runtime(settings).close()
    assert not caplog.records  # nothing left to tighten, nothing to say


def test_private_paths_cover_the_database_and_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    initialize(settings)
    dirs, files = private_paths(settings)
    assert settings.data_dir in dirs and settings.keys_dir in dirs and settings.pki_dir in dirs
    names = {f.name for f in files}
    assert {"provatar.db", "service.secret", "jwt_es256.pem", "audit_ed25519.pem"} <= names
    # A database elsewhere (PostgreSQL) has no file here to protect.
    pg = Settings(data_dir=tmp_path / "data", database_url="postgresql+psycopg://u@h/db")
    assert not any(f.name.startswith("provatar.db") for f in private_paths(pg)[1])
