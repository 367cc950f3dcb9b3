"""AuditLog on real databases: append/verify, every single-row tamper, concurrency, query and export."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from audit import (
    AuditError,
    AuditLog,
    ChainBroken,
    ChainVerifier,
    CheckpointMismatch,
    InvalidAuditEvent,
    MissingEntry,
    SigningKeyError,
    load_or_create_signing_key,
)

N = 5  # entries per tamper test: first (1), middle (3), last (5)

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


@pytest.fixture()
def log(engine: Engine, key: Ed25519PrivateKey) -> AuditLog:
    log = AuditLog(engine, key, key_id="test-key")
    for i in range(1, N + 1):
        log.append(
            action="generation.requested" if i % 2 else "policy.decision",
            actor=f"client:{'a' if i <= 3 else 'b'}",
            outcome="ok" if i % 2 else "denied",
            subject="subj_1" if i != 4 else None,
            request_id=f"req-{i}",
            details={"i": i, "reasons": ["no_consent"] if i % 2 == 0 else [], "score": 0.25 * i},
        )
    return log


def _sql(engine: Engine, statement: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_append_assigns_gap_free_seq_and_links_hashes(log: AuditLog) -> None:
    events = log.query(limit=100)
    assert [e.seq for e in events] == list(range(1, N + 1))
    assert events[0].prev_hash == "0" * 64
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.entry_hash
    assert all(e.ts.endswith("Z") and len(e.ts) == 27 for e in events)
    report = log.verify()
    assert (report.entries, report.checkpoint_size, report.head_hash) == (N, N, events[-1].entry_hash)
    checkpoint = log.checkpoint()
    assert (
        checkpoint is not None
        and checkpoint.root_hash == report.root_hash
        and checkpoint.key_id == "test-key"
    )


def test_within_commits_the_callers_change_with_the_entry_or_neither(log: AuditLog, engine: Engine) -> None:
    """`append(within=...)`: the caller's own write shares the entry's transaction (exactly-once job moves)."""
    _sql(engine, "CREATE TABLE side_effect (seq INTEGER NOT NULL)")

    def record(conn: Any, seq: int) -> None:
        conn.execute(text("INSERT INTO side_effect (seq) VALUES (:seq)"), {"seq": seq})

    def refuse(conn: Any, seq: int) -> None:
        record(conn, seq)
        raise LookupError("the job was not in a state to move")

    event = log.append(action="generation.completed", actor="worker", outcome="ok", within=record)
    assert event.seq == N + 1
    with pytest.raises(LookupError):
        log.append(action="generation.completed", actor="worker", outcome="ok", within=refuse)
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT seq FROM side_effect"))] == [N + 1]
    assert log.verify().entries == N + 1  # the refused entry left no row, no gap, no checkpoint
    assert log.append(action="generation.failed", actor="worker", outcome="error").seq == N + 2


def test_empty_log_verifies(engine: Engine, key: Ed25519PrivateKey) -> None:
    report = AuditLog(engine, key).verify()
    assert report.entries == 0 and report.checkpoint_size == 0


# Every column of one row, at the first, a middle and the last position, each edited on its own.
COLUMN_EDITS: dict[str, Any] = {
    "event_id": str(uuid.UUID(int=7)),
    "ts": "2020-01-01T00:00:00.000000Z",
    "kind": "provatar.audit/v0",
    "action": "consent.revoked",
    "actor": "client:mallory",
    "subject": "subj_other",
    "outcome": "rejected",
    "request_id": "req-forged",
    "details": '{"i": 0}',
    "prev_hash": "f" * 64,
    "entry_hash": "e" * 64,
}


@pytest.mark.parametrize("seq", [1, 3, N])
@pytest.mark.parametrize("column", sorted(COLUMN_EDITS))
def test_editing_any_column_of_any_row_is_named(log: AuditLog, engine: Engine, column: str, seq: int) -> None:
    _sql(engine, f"UPDATE audit_event SET {column} = :v WHERE seq = :seq", v=COLUMN_EDITS[column], seq=seq)
    with pytest.raises(ChainBroken) as info:
        log.verify()
    assert info.value.seq == seq
    assert info.value.code == "chain_broken"
    assert str(seq) in info.value.message


@pytest.mark.parametrize("seq", [1, 3, N])
def test_nulling_the_subject_is_named(log: AuditLog, engine: Engine, seq: int) -> None:
    _sql(engine, "UPDATE audit_event SET subject = NULL WHERE seq = :seq", seq=seq)
    with pytest.raises(ChainBroken) as info:
        log.verify()
    assert info.value.seq == seq


@pytest.mark.parametrize("seq", [1, 3])
def test_deleting_a_row_is_a_missing_entry(log: AuditLog, engine: Engine, seq: int) -> None:
    _sql(engine, "DELETE FROM audit_event WHERE seq = :seq", seq=seq)
    with pytest.raises(MissingEntry) as info:
        log.verify()
    assert info.value.seq == seq and info.value.code == "missing_entry"


def test_deleting_the_last_row_is_caught_by_the_checkpoint(log: AuditLog, engine: Engine) -> None:
    _sql(engine, "DELETE FROM audit_event WHERE seq = :seq", seq=N)
    with pytest.raises(CheckpointMismatch) as info:
        log.verify()
    assert info.value.seq == N and info.value.code == "checkpoint_mismatch"


@pytest.mark.parametrize("seq", [1, 3, N])
def test_renumbering_a_row_is_named(log: AuditLog, engine: Engine, seq: int) -> None:
    _sql(engine, "UPDATE audit_event SET seq = 100 WHERE seq = :seq", seq=seq)
    with pytest.raises((MissingEntry, CheckpointMismatch)) as info:
        log.verify()
    assert info.value.seq == seq


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 4), (4, 5), (1, 5)])
def test_swapping_two_rows_is_named(log: AuditLog, engine: Engine, a: int, b: int) -> None:
    # (a temporary seq far above the log: seq <= 0 is refused by the table's CHECK constraint)
    _sql(engine, "UPDATE audit_event SET seq = 1000000 WHERE seq = :a", a=a)
    _sql(engine, "UPDATE audit_event SET seq = :a WHERE seq = :b", a=a, b=b)
    _sql(engine, "UPDATE audit_event SET seq = :b WHERE seq = 1000000", b=b)
    with pytest.raises(ChainBroken) as info:
        log.verify()
    assert info.value.seq == a


def test_a_consistently_rehashed_last_row_is_caught_by_the_signature(log: AuditLog, engine: Engine) -> None:
    # The forger edits the last row AND recomputes its hash; only the signed checkpoint can tell.
    last = log.query(limit=N)[-1]
    forged = last.hashed_fields() | {"actor": "client:mallory"}
    chain = ChainVerifier(start_seq=N, prev_hash=last.prev_hash)
    from audit.chain import compute_entry_hash

    new_hash = compute_entry_hash(forged)
    _sql(
        engine,
        "UPDATE audit_event SET actor = 'client:mallory', entry_hash = :h WHERE seq = :s",
        h=new_hash,
        s=N,
    )
    chain.feed({**forged, "entry_hash": new_hash})  # the row itself is self-consistent
    with pytest.raises(CheckpointMismatch) as info:
        log.verify()
    assert info.value.seq == N


CHECKPOINT_EDITS: dict[str, Any] = {
    "size": N - 1,
    "head_hash": "a" * 64,
    "root_hash": "b" * 64,
    "signed_at": "2020-01-01T00:00:00.000000Z",
    "key_id": "other-key",
    "kind": "provatar.audit.checkpoint/v0",
    "signature": "AAAA",
    "frontier": '["' + "c" * 64 + '"]',
    "origin": "elsewhere",
}


@pytest.mark.parametrize("column", sorted(CHECKPOINT_EDITS))
def test_editing_the_checkpoint_is_caught(log: AuditLog, engine: Engine, column: str) -> None:
    _sql(engine, f"UPDATE audit_checkpoint SET {column} = :v", v=CHECKPOINT_EDITS[column])
    with pytest.raises(CheckpointMismatch) as info:
        log.verify()
    assert info.value.seq is not None and 1 <= info.value.seq <= N


def test_deleting_the_checkpoint_is_caught(log: AuditLog, engine: Engine) -> None:
    _sql(engine, "DELETE FROM audit_checkpoint")
    with pytest.raises(CheckpointMismatch) as info:
        log.verify()
    assert info.value.seq == 1


def test_a_row_inserted_beyond_the_checkpoint_is_caught(log: AuditLog, engine: Engine) -> None:
    last = log.query(limit=N)[-1]
    _sql(
        engine,
        "INSERT INTO audit_event (seq, event_id, ts, kind, action, actor, subject, outcome, request_id,"
        " details, prev_hash, entry_hash) VALUES (:seq, :eid, :ts, 'provatar.audit/v1', 'consent.granted',"
        " 'x', NULL, 'ok', NULL, '{}', :prev, :h)",
        seq=N + 1,
        eid=str(uuid.uuid4()),
        ts=last.ts,
        prev=last.entry_hash,
        h="d" * 64,
    )
    with pytest.raises(CheckpointMismatch) as info:
        log.verify()
    assert info.value.seq == N + 1


def test_checkpoint_signed_by_another_key_is_refused(log: AuditLog, engine: Engine) -> None:
    other = AuditLog(engine, Ed25519PrivateKey.generate(), key_id="test-key")
    with pytest.raises(CheckpointMismatch, match="signature"):
        other.verify()


def test_append_refuses_to_extend_a_tampered_head(log: AuditLog, engine: Engine) -> None:
    _sql(engine, "DELETE FROM audit_event WHERE seq = :seq", seq=N)
    with pytest.raises(CheckpointMismatch):
        log.append(action="auth.failed", actor="anonymous", outcome="rejected")
    assert len(log.query(limit=100)) == N - 1  # nothing was signed on top of the tampering


def test_concurrent_appends_from_8_threads_are_gap_free(engine: Engine, key: Ed25519PrivateKey) -> None:
    log = AuditLog(engine, key)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                log.append(action="detection.completed", actor=f"client:{n}", outcome="ok", details={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert log.verify().entries == 80
    assert [e.seq for e in log.query(limit=1000)] == list(range(1, 81))


_CHILD = """
import sys
from pathlib import Path
from sqlmodel import create_engine
from audit import AuditLog, load_or_create_signing_key
engine = create_engine(sys.argv[1])
log = AuditLog(engine, load_or_create_signing_key(Path(sys.argv[2])))
for i in range(15):
    log.append(action="generation.completed", actor="proc:" + sys.argv[3], outcome="ok", details={"i": i})
"""


def test_concurrent_appends_from_separate_processes_are_gap_free(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    key_path = tmp_path / "audit.key"
    key = load_or_create_signing_key(key_path)
    url = sqlite_engine.url.render_as_string(hide_password=False)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, url, str(key_path), str(n)], env=env)
        for n in range(3)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    log = AuditLog(sqlite_engine, key)
    assert log.verify().entries == 45
    assert {e.actor for e in log.query(limit=100)} == {"proc:0", "proc:1", "proc:2"}


@pytest.mark.postgres
def test_append_commits_even_when_the_callers_transaction_rolls_back(pg_engine: Engine) -> None:
    log = AuditLog(pg_engine, Ed25519PrivateKey.generate())
    with pg_engine.connect() as conn:
        trans = conn.begin()
        conn.execute(text("CREATE TEMP TABLE scratch (x int)"))
        log.append(
            action="policy.decision", actor="client:a", outcome="denied", details={"reasons": ["no_face"]}
        )
        trans.rollback()
    assert [e.action for e in log.query()] == ["policy.decision"]
    assert log.verify().entries == 1


def test_query_filters(log: AuditLog) -> None:
    assert [e.seq for e in log.query(actor="client:b")] == [4, 5]
    assert [e.seq for e in log.query(subject="subj_1")] == [1, 2, 3, 5]
    assert [e.seq for e in log.query(action="policy.decision")] == [2, 4]
    assert [e.seq for e in log.query(action=["policy.decision", "generation.requested"], limit=2)] == [1, 2]
    assert [e.seq for e in log.query(after_seq=3)] == [4, 5]
    events = log.query()
    assert [e.seq for e in log.query(since=events[2].ts)] == [3, 4, 5]
    assert [e.seq for e in log.query(until=events[2].ts)] == [1, 2]
    future = datetime.now(UTC) + timedelta(days=1)
    assert log.query(since=future) == []
    assert len(log.query(until=future)) == N
    with pytest.raises(ValueError):
        log.query(limit=0)


def test_export_jsonl_lines_rehash_and_verify_offline(log: AuditLog) -> None:
    buf = io.StringIO()
    assert log.export_jsonl(buf) == N
    lines = buf.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, N + 1))
    assert all(" " not in line.split('"ts"')[0] for line in lines)  # canonical: no whitespace between tokens
    chain = ChainVerifier()
    chain.feed_all(records)
    checkpoint = log.checkpoint()
    assert checkpoint is not None
    chain.check_checkpoint(checkpoint)
    filtered = io.StringIO()
    assert log.export_jsonl(filtered, actor="client:b") == 2


def test_log_small_batches_still_verify(engine: Engine, key: Ed25519PrivateKey) -> None:
    log = AuditLog(engine, key, batch_size=3)
    for i in range(10):
        log.append(action="subject.enrolled", actor="admin", outcome="ok", subject=f"s{i}")
    assert log.verify().entries == 10
    assert sum(1 for _ in log.iter_events()) == 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "Generation", "actor": "a", "outcome": "ok"},
        {"action": "generation.completed", "actor": "", "outcome": "ok"},
        {"action": "generation.completed", "actor": "a", "outcome": "maybe"},
        {"action": "generation.completed", "actor": "a", "outcome": "ok", "details": {"x": float("nan")}},
        {"action": "generation.completed", "actor": "a", "outcome": "ok", "details": {"x": object()}},
    ],
)
def test_bad_appends_are_refused_before_touching_the_log(log: AuditLog, kwargs: dict[str, Any]) -> None:
    with pytest.raises(AuditError) as info:
        log.append(**kwargs)
    assert info.value.code in {"invalid_audit_event", "not_canonical_json"}
    assert log.verify().entries == N


def test_signing_key_is_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_signing_key(path)
    message = b"checkpoint"
    second.public_key().verify(first.sign(message), message)
    assert not list(path.parent.glob(".*.tmp"))


def test_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.pem"
    load_or_create_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_or_create_signing_key(path)


def test_signing_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "audit.pem"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(SigningKeyError, match="Ed25519"):
        load_or_create_signing_key(path)


def test_invalid_event_error_carries_code_and_message() -> None:
    err = InvalidAuditEvent("outcome 'x' must be one of ...")
    assert err.code == "invalid_audit_event" and "outcome" in str(err)
