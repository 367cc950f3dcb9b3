"""`provatar --help` starts fast because the heavy libraries (torch, OpenCV, mediapipe, dlib, PyAV, c2pa, SQLAlchemy)
are imported only inside the commands that need them. Checked deterministically: which modules a fresh interpreter
has loaded, not how long it took."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "torchvision", "cv2", "mediapipe", "dlib", "av", "c2pa", "sqlalchemy", "sqlmodel", "scipy", "fastapi")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def test_help_lists_every_command_group() -> None:
    r = _python("-m", "service.cli", "--help")
    assert r.returncode == 0, r.stderr
    for command in ("init", "serve", "generate", "detect", "demo", "consent", "client", "audit", "eval"):
        assert command in r.stdout, command
    r = _python("-m", "service.cli", "consent", "--help")  # groups registered by their own modules are there too
    assert r.returncode == 0 and "enroll" in r.stdout and "revoke" in r.stdout, r.stdout + r.stderr


def test_importing_the_cli_and_showing_help_loads_no_heavy_library() -> None:
    probe = f"""
import json, sys
from typer.testing import CliRunner
import service.cli
loaded = {{"import": [m for m in {HEAVY!r} if m in sys.modules]}}
for argv in (["--help"], ["generate", "--help"], ["consent", "enroll", "--help"], ["serve", "--help"]):
    result = CliRunner().invoke(service.cli.app, argv)
    assert result.exit_code == 0, (argv, result.output)
loaded["help"] = [m for m in {HEAVY!r} if m in sys.modules]
print(json.dumps(loaded))
"""
    r = _python("-c", probe)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"import": [], "help": []}


def test_the_package_errors_import_without_their_packages_heavy_modules() -> None:
    # service/errors.py maps every package's errors; importing them must not load the generator or the audit tables.
    probe = f"""
import json, sys
import generation.errors, audit.errors, safeguards.errors, policies.errors, service.errors
print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
from generation import TalkingFaceGenerator, load_image  # the lazy package exports still resolve
from audit import AuditLog
print(json.dumps([m for m in ("torch", "sqlmodel") if m in sys.modules]))
"""
    r = _python("-c", probe)
    assert r.returncode == 0, r.stderr
    before, after = (json.loads(line) for line in r.stdout.strip().splitlines()[-2:])
    assert before == [] and after == ["torch", "sqlmodel"]
