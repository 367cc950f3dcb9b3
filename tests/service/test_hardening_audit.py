"""`provatar audit verify` against the witness kept outside the database (issue 14 item 5), through the CLI.

Checked to fail before the witness existed: the emptied log verified with exit 0 ("0 entries"), and so did the
rollback to an older checkpoint and the seq -7 row.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.service.conftest import Cli


@pytest.fixture()
def installed(cli: Cli, data_dir: Path) -> Path:
    r = cli("init")
    assert r.exit_code == 0, r.output
    for name in ("one", "two", "three"):
        assert cli("client", "create", f"witness-{name}", "--scope", "detect").exit_code == 0
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["witnessed_size"] >= 4, r.output
    return data_dir


def test_cli_verify_names_an_emptied_log_a_rollback_and_a_negative_seq(cli: Cli, installed: Path) -> None:
    db = installed / "provatar.db"
    with sqlite3.connect(db) as conn:
        checkpoint = conn.execute("SELECT * FROM audit_checkpoint").fetchone()
        size = checkpoint[2]
    assert cli("client", "create", "witness-four", "--scope", "detect").exit_code == 0
    # Rollback: the newest entry deleted, the previous (validly signed) checkpoint put back.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_event WHERE seq > ?", (size,))
        conn.execute("DELETE FROM audit_checkpoint")
        conn.execute(f"INSERT INTO audit_checkpoint VALUES ({', '.join('?' * len(checkpoint))})", checkpoint)
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["code"] == "witness_mismatch", r.output
    assert "rolled back" in json.loads(r.stdout)["message"]
    # A forged row below the chain.
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute("INSERT INTO audit_event SELECT -7, 'forged', ts, kind, 'consent.granted', actor, subject, "
                     "outcome, request_id, details, prev_hash, entry_hash FROM audit_event WHERE seq = 1")  # fmt: skip
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["code"] == "invalid_sequence", r.output
    # Emptied.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_event")
        conn.execute("DELETE FROM audit_checkpoint")
    r = cli("audit", "verify")
    assert r.exit_code == 1 and "emptied" in r.output and "Traceback" not in r.output, r.output


def test_audit_signing_key_can_live_outside_the_data_dir(tmp_path: Path) -> None:
    from service.runtime import Runtime, initialize
    from service.settings import Settings

    key = tmp_path / "elsewhere" / "audit.pem"
    key.parent.mkdir()
    settings = Settings(data_dir=tmp_path / "data", audit_signing_key=key, audit_witness_path=tmp_path / "w.jsonl")
    initialize(settings)
    rt = Runtime(settings)
    try:
        rt.audit.append(action="client.created", actor="test", outcome="ok")
        assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
        assert rt.audit.verify().witnessed_size == rt.audit.verify().entries
        assert (tmp_path / "w.jsonl").is_file() and not (settings.data_dir / "witness").exists()
    finally:
        rt.close()
