"""The audit witness (issue 14 item 5): a rollback to an older validly signed checkpoint, an emptied log, a
deleted witness and rows at seq <= 0 are named by verify(); an intact log with its witness passes.

Checked to fail on the code before the witness: every one of these logs verified (an emptied log as "0 entries",
a rolled-back one as a shorter intact log, a seq -7 row was skipped by verify and shown by exports).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from audit import AuditLog, FileWitness, InvalidSequence, WitnessMismatch

ENGINES = [
    pytest.param("sqlite_engine", id="sqlite"),
    pytest.param("pg_engine", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _log(engine: Engine, key: Ed25519PrivateKey, path: Path, n: int) -> AuditLog:
    log = AuditLog(engine, key, key_id="test-key", witness=FileWitness(path))
    for i in range(n):
        log.append(action="generation.requested", actor="client:a", outcome="ok", details={"i": i})
    return log


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_intact_log_with_its_witness_verifies(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "other-volume" / "witness.jsonl"
    log = _log(engine, key, path, 5)
    report = log.verify()
    assert (report.entries, report.witnessed_size) == (5, 5)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["size"] for line in lines] == [1, 2, 3, 4, 5] and lines[-1]["root_hash"] == report.root_hash
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_an_emptied_log_is_named(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    log = _log(engine, key, tmp_path / "w.jsonl", 4)
    _sql(engine, "DELETE FROM audit_event")
    _sql(engine, "DELETE FROM audit_checkpoint")
    with pytest.raises(WitnessMismatch) as info:
        log.verify()
    assert "emptied" in str(info.value) and "4 entries" in str(info.value)


def test_a_rollback_to_an_older_signed_checkpoint_is_named(
    engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = _log(engine, key, tmp_path / "w.jsonl", 3)
    with engine.connect() as conn:
        old = dict(conn.execute(text("SELECT * FROM audit_checkpoint")).mappings().one())
    for i in range(3):
        log.append(action="consent.revoked", actor="cli:op", outcome="ok", details={"i": i})
    # Put the database back to size 3: delete the newest rows and restore the older, validly signed checkpoint.
    _sql(engine, "DELETE FROM audit_event WHERE seq > 3")
    _sql(engine, "DELETE FROM audit_checkpoint")
    columns = ", ".join(old)
    with engine.begin() as conn:
        values = {k: json.dumps(v) if isinstance(v, list) else v for k, v in old.items()}
        conn.execute(
            text(f"INSERT INTO audit_checkpoint ({columns}) VALUES ({', '.join(':' + c for c in old)})"), values
        )
    assert AuditLog(engine, key, key_id="test-key").verify().entries == 3  # without the witness: "intact"
    with pytest.raises(WitnessMismatch) as info:
        log.verify()
    assert "rolled back" in str(info.value) and info.value.seq == 4


def test_a_deleted_witness_is_named_once_one_existed(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    log = _log(engine, key, path, 2)
    path.unlink()
    with pytest.raises(WitnessMismatch) as info:
        log.verify()
    assert "holds none" in str(info.value)


def test_a_forged_witness_line_is_named(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    log = _log(engine, key, path, 2)
    forged = json.loads(path.read_text().splitlines()[-1])
    forged["size"] = 99
    with path.open("a") as fh:
        fh.write(json.dumps(forged) + "\n")
    with pytest.raises(WitnessMismatch) as info:
        log.verify()
    assert "not signed" in str(info.value)


def test_a_torn_last_witness_line_is_ignored(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    log = _log(engine, key, path, 2)
    with path.open("a") as fh:
        fh.write('{"origin":"provatar","size":3,"head')  # a crash in the middle of a write
    assert log.verify().witnessed_size == 2


def test_seq_zero_or_negative_is_refused_by_the_table(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    _log(engine, key, tmp_path / "w.jsonl", 1)
    with pytest.raises(IntegrityError):
        _sql(engine, "UPDATE audit_event SET seq = -7 WHERE seq = 1")


def test_seq_zero_or_negative_rows_in_an_older_database_are_named(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = _log(sqlite_engine, key, tmp_path / "w.jsonl", 3)
    with sqlite_engine.begin() as conn:  # as in a database created before the CHECK constraint
        conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        conn.exec_driver_sql(
            "INSERT INTO audit_event SELECT -7, 'forged-event-id', ts, kind, 'consent.granted', actor, subject, "
            "outcome, request_id, details, prev_hash, entry_hash FROM audit_event WHERE seq = 1"
        )
    with pytest.raises(InvalidSequence) as info:
        log.verify()
    assert info.value.seq == -7
    out = io.StringIO()
    log.export_jsonl(out)
    assert [json.loads(line)["seq"] for line in out.read().splitlines() or out.getvalue().splitlines()] == [1, 2, 3]
    assert all(e.seq > 0 for e in log.query(limit=100))


def test_an_unwritable_witness_is_reported_not_ignored(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from audit import WitnessUnavailable
    from service.errors import describe

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the witness directory should be")
    log = AuditLog(sqlite_engine, key, key_id="test-key", witness=FileWitness(blocker / "w.jsonl"))
    with pytest.raises(WitnessUnavailable) as info:
        log.append(action="generation.requested", actor="client:a", outcome="ok")
    assert describe(info.value).http_status == 503
    # The entry itself is stored and signed; only its witnessing failed (and was reported).
    assert AuditLog(sqlite_engine, key, key_id="test-key").verify().entries == 1


# ------------------------------------------------------------------------------------- readiness: check_witness
def test_check_witness_is_ok_when_the_witness_keeps_up(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from audit.witness import check_witness

    log = _log(sqlite_engine, key, tmp_path / "w.jsonl", 3)
    health = check_witness(log.witness, log.checkpoint())
    assert (health.ok, health.configured, health.checkpoint_size, health.witnessed_size) == (True, True, 3, 3)
    assert check_witness(None, log.checkpoint()).configured is False
    empty = AuditLog(sqlite_engine, key, witness=FileWitness(tmp_path / "new" / "w.jsonl"), origin="other")
    assert check_witness(empty.witness, empty.checkpoint()).ok  # nothing yet, and the directory can be made


def test_check_witness_names_a_lagging_rolled_back_missing_or_unwritable_witness(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from audit.witness import check_witness

    path = tmp_path / "w.jsonl"
    log = _log(sqlite_engine, key, path, 4)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]))  # the witnessing of the last two appends failed
    health = check_witness(log.witness, log.checkpoint())
    assert (health.ok, health.code, health.witnessed_size) == (False, "witness_lagging", 2)
    path.write_text("".join(lines) + lines[-1].replace('"size":4', '"size":9'))  # a newer one than the database's
    assert check_witness(log.witness, log.checkpoint()).code == "witness_ahead"
    path.unlink()
    assert check_witness(log.witness, log.checkpoint()).code == "witness_missing"
    blocker = tmp_path / "a-file"
    blocker.write_text("where the witness directory should be")
    stuck = FileWitness(blocker / "w.jsonl")
    assert check_witness(stuck, log.checkpoint()).code == "witness_unavailable"


def test_check_witness_reads_only_the_end_of_a_long_file(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from audit.witness import check_witness

    path = tmp_path / "w.jsonl"
    log = _log(sqlite_engine, key, path, 2)
    last = path.read_text().splitlines(keepends=True)[-1]
    filler = last.replace('"origin":"provatar"', '"origin":"another-log"')
    path.write_text(last * 2 + filler * 400 + last)  # > 64 KiB, the last line ours
    assert path.stat().st_size > 64 << 10
    assert check_witness(log.witness, log.checkpoint()).witnessed_size == 2
    path.write_text(last + filler * 400)  # ours only far from the end: found by the full read
    assert check_witness(log.witness, log.checkpoint()).witnessed_size == 2
