"""`provatar audit export --bundle` and `provatar audit verify-export`, run as a user would (subprocesses).

verify-export runs with no PROVATAR_* settings, an empty HOME and an empty working directory: what a regulator who
received the file has. It must not need, read or create a data directory."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import REPO_ROOT

BUNDLES = Path(__file__).parent / "vectors" / "bundles"


def _provatar(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _bare_env(home: Path) -> dict[str, str]:
    """Only what running Python needs: no PROVATAR_* variable, HOME an empty directory."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": path, "HOME": str(home), "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An initialised data dir whose audit log has a few entries, its bundle, and the service's public key."""
    root = tmp_path_factory.mktemp("bundle-cli")
    data = root / "data"
    env = {**_bare_env(root), "PROVATAR_DATA_DIR": str(data)}
    r = _provatar("init", env=env, cwd=root)
    assert r.returncode == 0, r.stderr
    from service.runtime import Runtime
    from service.settings import Settings

    rt = Runtime(Settings(data_dir=data))
    try:
        for i in range(3):  # a few more entries, each with its signed checkpoint in the witness
            rt.audit.append(action="consent.granted", actor="cli:test", outcome="ok", subject=f"subj_{i}")
    finally:
        rt.close()
    bundle = root / "evidence.zip"
    r = _provatar("audit", "export", "--bundle", str(bundle), env=env, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "4 entries, 4 signed checkpoints" in r.stderr, r.stderr
    sha256 = hashlib.sha256(bundle.read_bytes()).hexdigest()
    with sqlite3.connect(data / "provatar.db") as db:
        action, details = db.execute("SELECT action, details FROM audit_event ORDER BY seq DESC LIMIT 1").fetchone()
    assert action == "audit.exported" and json.loads(details)["sha256"] == sha256  # who took what out
    private = serialization.load_pem_private_key((data / "keys" / "audit_ed25519.pem").read_bytes(), None)
    public = root / "service-audit-key.pem"
    public.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return {"root": root, "data": data, "bundle": bundle, "public_key": public, "env_data": data}


@pytest.fixture()
def bare(tmp_path: Path) -> tuple[dict[str, str], Path]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    return _bare_env(home), work


def test_export_writes_a_private_bundle(installation: dict[str, Path]) -> None:
    assert (installation["bundle"].stat().st_mode & 0o777) == 0o600


def test_an_exported_bundle_verifies_with_no_data_dir(
    installation: dict[str, Path], bare: tuple[dict[str, str], Path]
) -> None:
    env, work = bare
    r = _provatar("audit", "verify-export", str(installation["bundle"]), env=env, cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bundle intact: 4 entries under 4 signed checkpoints" in r.stdout
    assert "self-asserted" in r.stdout and "warning" in r.stdout
    r = _provatar(
        "audit", "verify-export", str(installation["bundle"]), "--public-key", str(installation["public_key"]),
        env=env, cwd=work,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trusted key" in r.stdout and "warning" not in r.stdout
    assert list(Path(env["HOME"]).iterdir()) == [] and list(work.iterdir()) == []  # nothing created


def test_a_tampered_bundle_exits_1_naming_the_first_failure(bare: tuple[dict[str, str], Path]) -> None:
    env, work = bare
    r = _provatar("audit", "verify-export", str(BUNDLES / "rechained.zip"), env=env, cwd=work)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "first failure checkpoint roots: checkpoint_root_mismatch (checkpoint at size 5)" in r.stderr
    assert "the first altered entry is 5" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_a_bundle_signed_by_another_key_fails_against_the_trusted_key(
    installation: dict[str, Path], bare: tuple[dict[str, str], Path]
) -> None:
    env, work = bare
    r = _provatar(
        "audit", "verify-export", str(BUNDLES / "forged_key.zip"), "--public-key", str(installation["public_key"]),
        "--json", env=env, cwd=work,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["intact"] is False and report["first_failure"]["reason"] == "key_untrusted"


def test_unreadable_arguments_are_exit_2(installation: dict[str, Path], bare: tuple[dict[str, str], Path]) -> None:
    env, work = bare
    r = _provatar("audit", "verify-export", str(work / "missing.zip"), env=env, cwd=work)
    assert r.returncode == 2 and "error[invalid_input]" in r.stderr, r.stderr
    not_pem = work / "key.pem"
    not_pem.write_text("not a key")
    r = _provatar(
        "audit", "verify-export", str(installation["bundle"]), "--public-key", str(not_pem), env=env, cwd=work
    )
    assert r.returncode == 2 and "not a PEM public key" in r.stderr, r.stderr
    r = _provatar("audit", "verify-export", str(installation["bundle"]), "--fingerprint", "abc", env=env, cwd=work)
    assert r.returncode == 2 and "ed25519:<16 hex digits>" in r.stderr, r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_export_refuses_filters_and_unwritable_targets(installation: dict[str, Path]) -> None:
    root = installation["root"]
    env = {**_bare_env(root), "PROVATAR_DATA_DIR": str(installation["data"])}
    r = _provatar("audit", "export", "--bundle", str(root / "b2.zip"), "--since", "2026-01-01", env=env, cwd=root)
    assert r.returncode == 2 and "whole log" in r.stderr, r.stderr
    r = _provatar("audit", "export", "--bundle", str(root), env=env, cwd=root)
    assert r.returncode == 2 and "error[output_not_writable]" in r.stderr, r.stderr
    r = _provatar("audit", "export", "--bundle", str(root / "no" / "such" / "b.zip"), env=env, cwd=root)
    assert r.returncode == 2 and "error[output_not_writable]" in r.stderr, r.stderr
    assert not (root / "b2.zip").exists()
