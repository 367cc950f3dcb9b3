"""Evidence bundles: the committed vectors (one intact, one per tamper) give the named verdict; bundles exported from a
real log verify; a log or witness that does not verify is never packaged; hostile archives are named, not crashed on."""

from __future__ import annotations

import json
import random
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, text

from audit import AuditLog, ChainBroken, CheckpointMismatch, FileWitness, WitnessMismatch
from audit.bundle import CHECKPOINTS, ENTRIES, MANIFEST, PROOFS, export_bundle, size_ranges
from audit.bundle_verify import FAILED, NOT_CHECKED, OK, WARNING, BundleReport, verify_bundle
from audit.errors import BundleInvalid
from tests.audit.vectors import make_bundles
from tests.audit.vectors.make_bundles import read_members, rewrite

BUNDLES = Path(__file__).parent / "vectors" / "bundles"
EXPECTED: dict[str, dict[str, Any]] = json.loads((BUNDLES / "expected.json").read_text())
TRUSTED = serialization.load_pem_public_key((BUNDLES / "trusted_public_key.pem").read_bytes())
assert isinstance(TRUSTED, Ed25519PublicKey)


def _first(report: BundleReport) -> list[Any] | None:
    first = report.first_failure
    return None if first is None else [first.name, first.reason, first.seq]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_vector_gives_its_named_verdict(name: str) -> None:
    case = EXPECTED[name]
    report = verify_bundle(BUNDLES / f"{name}.zip")
    trusted = verify_bundle(BUNDLES / f"{name}.zip", trusted_keys=[TRUSTED])
    if case.get("intact"):
        assert report.intact, report.checks
        assert [c.name for c in report.checks if c.status == WARNING] == ["keys"]  # the key is only self-asserted
        assert not report.key_trusted
        assert _first(trusted) == case.get("first_with_trusted_key")
        assert trusted.intact == ("first_with_trusted_key" not in case)
    else:
        assert not report.intact
        assert _first(report) == case["first"]
        assert _first(trusted) == case["first"]
        with pytest.raises(BundleInvalid) as info:
            report.raise_for_failure()
        assert (info.value.check, info.value.reason, info.value.seq) == tuple(case["first"])


def test_the_intact_vector_reports_what_it_proved() -> None:
    report = verify_bundle(BUNDLES / "intact.zip", trusted_keys=[TRUSTED])
    assert report.intact and report.key_trusted
    assert all(c.status == OK for c in report.checks), report.checks
    assert (report.entries, report.checkpoints, report.newest_size) == (8, 8, 8)
    assert report.fingerprints == [_fingerprint(TRUSTED)]
    report.raise_for_failure()  # nothing to raise


def test_the_vectors_are_reproduced_by_their_script(tmp_path: Path) -> None:
    expected = make_bundles.make_all(tmp_path)
    assert expected == EXPECTED
    assert (tmp_path / "trusted_public_key.pem").read_bytes() == (BUNDLES / "trusted_public_key.pem").read_bytes()
    for name in EXPECTED:
        if name == "corrupt":
            continue  # a cut-off zip: compared below only when the compressor gives the same bytes
        assert read_members(tmp_path / f"{name}.zip")[1] == read_members(BUNDLES / f"{name}.zip")[1], name
    if (tmp_path / "intact.zip").read_bytes() == (BUNDLES / "intact.zip").read_bytes():
        assert (tmp_path / "corrupt.zip").read_bytes() == (BUNDLES / "corrupt.zip").read_bytes()


# ------------------------------------------------------------------------------------------------ from a real log
@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _log(engine: Engine, key: Ed25519PrivateKey, witness: Path | None, n: int, start: int = 0) -> AuditLog:
    log = AuditLog(engine, key, key_id="provatar-audit-1", witness=FileWitness(witness) if witness else None)
    for i in range(start, start + n):
        log.append(action="consent.granted", actor="cli:op", outcome="ok", subject=f"subj_{i}", details={"i": i})
    return log


@pytest.fixture(
    params=[
        pytest.param("sqlite_engine", id="sqlite"),
        pytest.param("pg_engine", id="postgres", marks=pytest.mark.postgres),
    ]
)
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def test_a_bundle_of_a_real_log_verifies_and_is_private(engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    log = _log(engine, key, tmp_path / "witness.jsonl", 13)
    summary = export_bundle(log, tmp_path / "b.zip", exporter_version="1.2.3")
    assert (summary.entries, summary.checkpoints, summary.proofs, summary.size) == (13, 13, 12, 13)
    assert stat.S_IMODE((tmp_path / "b.zip").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    report = verify_bundle(tmp_path / "b.zip", trusted_keys=[key.public_key()])
    assert report.intact and report.key_trusted, report.checks
    assert report.root_hash == summary.root_hash == log.verify().root_hash
    _, members = read_members(tmp_path / "b.zip")
    manifest = json.loads(members[MANIFEST])
    assert manifest["exporter"] == {"name": "provatar", "version": "1.2.3"}
    assert manifest["checkpoints"]["sizes"] == [[1, 13]] and manifest["entries"] == 13
    # entries.jsonl is exactly what the plain export writes (the canonical form the chain hashes)
    with open(tmp_path / "plain.jsonl", "w") as fp:
        log.export_jsonl(fp)
    assert members[ENTRIES] == (tmp_path / "plain.jsonl").read_bytes()


def test_a_log_older_than_its_witness_gets_the_checkpoints_there_are(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    _log(sqlite_engine, key, None, 5)  # appended before a witness was configured: their checkpoints are gone
    log = _log(sqlite_engine, key, tmp_path / "witness.jsonl", 6, start=5)
    summary = export_bundle(log, tmp_path / "b.zip", exporter_version="t")
    assert (summary.entries, summary.checkpoints) == (11, 6)
    manifest = json.loads(read_members(tmp_path / "b.zip")[1][MANIFEST])
    assert manifest["checkpoints"]["sizes"] == [[6, 11]]
    assert verify_bundle(tmp_path / "b.zip", trusted_keys=[key.public_key()]).intact


def test_an_empty_log_gives_an_empty_bundle_that_verifies(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    log = AuditLog(sqlite_engine, key, witness=FileWitness(tmp_path / "w.jsonl"))
    summary = export_bundle(log, tmp_path / "b.zip", exporter_version="t")
    assert (summary.entries, summary.checkpoints, summary.proofs) == (0, 0, 0)
    report = verify_bundle(tmp_path / "b.zip", trusted_keys=[key.public_key()])
    assert report.intact, report.checks
    assert {c.name: c.status for c in report.checks}["checkpoint roots"] == NOT_CHECKED


def test_a_tampered_log_is_not_packaged(sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    log = _log(sqlite_engine, key, tmp_path / "witness.jsonl", 5)
    with sqlite_engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'cli:mallory' WHERE seq = 3"))
    with pytest.raises(ChainBroken) as info:
        export_bundle(log, tmp_path / "b.zip", exporter_version="t")
    assert info.value.seq == 3
    assert list(tmp_path.glob("*b.zip*")) == []  # neither the bundle nor a partial file


def test_a_witnessed_checkpoint_of_another_history_is_not_packaged(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """verify() compares the database with the newest witnessed checkpoint only; the bundle carries them all, so
    each one is checked against the entries before it is packaged."""
    witness = tmp_path / "witness.jsonl"
    log = _log(sqlite_engine, key, witness, 6)
    other_engine = _other_sqlite(tmp_path)
    _log(other_engine, key, tmp_path / "other.jsonl", 2, start=100)  # same key, another history
    lines = witness.read_text().splitlines(keepends=True)
    witness.write_text(
        lines[0] + (tmp_path / "other.jsonl").read_text().splitlines(keepends=True)[1] + "".join(lines[1:])
    )
    log.verify()  # the newest witnessed checkpoint still matches
    with pytest.raises(WitnessMismatch) as info:
        export_bundle(log, tmp_path / "b.zip", exporter_version="t")
    assert info.value.seq == 2 and "rewritten" in str(info.value)


def test_entries_appended_after_the_checkpoint_was_read_are_left_for_the_next_bundle(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(sqlite_engine, key, tmp_path / "witness.jsonl", 4)
    real_checkpoint = log.checkpoint

    def checkpoint_then_append():  # type: ignore[no-untyped-def]
        current = real_checkpoint()
        log.append(action="consent.revoked", actor="cli:op", outcome="ok")  # lands while the export runs
        return current

    monkeypatch.setattr(log, "checkpoint", checkpoint_then_append)
    summary = export_bundle(log, tmp_path / "b.zip", exporter_version="t")
    assert (summary.entries, summary.checkpoints) == (4, 4)
    assert verify_bundle(tmp_path / "b.zip").intact


# ------------------------------------------------------------------------------------------- hostile archives
def _tampered(tmp_path: Path, edit: Any, *, fix: bool = True) -> BundleReport:
    out = tmp_path / "t.zip"
    rewrite(BUNDLES / "intact.zip", out, edit, fix_digests=fix)
    return verify_bundle(out)


def _set(name: str, data: bytes) -> Any:
    def edit(members: dict[str, bytes]) -> None:
        members[name] = data

    return edit


@pytest.mark.parametrize(
    ("member", "data", "check", "reason"),
    [
        (MANIFEST, b"{not json", "manifest", "manifest_malformed"),
        (MANIFEST, b'{"format": "provatar.audit.bundle/v9"}', "manifest", "manifest_malformed"),
        (MANIFEST, b"[]", "manifest", "manifest_malformed"),
        (ENTRIES, b"[1, 2]\n", "entry chain", "entry_malformed"),
        (ENTRIES, b'{"seq": "1"}\n', "entry chain", "entry_malformed"),
        (CHECKPOINTS, b'{"size": "3"}\n', "checkpoint signatures", "checkpoint_malformed"),
        (PROOFS, b'{"size1": 1, "size2": 2, "proof": ["zz"]}\n', "consistency proofs", "proof_malformed"),
        (PROOFS, b"", "consistency proofs", "proof_missing"),
        ("keys/extra.pem", b"-----BEGIN PUBLIC KEY-----\n", "member digests", "member_unlisted"),
    ],
)
def test_malformed_members_are_named(tmp_path: Path, member: str, data: bytes, check: str, reason: str) -> None:
    report = _tampered(tmp_path, _set(member, data), fix=member != MANIFEST)
    first = report.first_failure
    assert first is not None and (first.name, first.reason) == (check, reason), report.checks


def test_a_key_that_is_not_the_one_the_manifest_names_is_refused(tmp_path: Path) -> None:
    _, members = read_members(BUNDLES / "intact.zip")
    key_file = next(n for n in members if n.startswith("keys/"))
    attacker = make_bundles.public_pem(make_bundles.test_key("attacker"))
    report = _tampered(tmp_path, _set(key_file, attacker))
    assert _first(report) == ["keys", "key_fingerprint_mismatch", None]


def test_a_corrupt_member_is_named_not_crashed_on(tmp_path: Path) -> None:
    src = BUNDLES / "intact.zip"
    out = tmp_path / "crc.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info), compress_type=zipfile.ZIP_STORED)
    data = bytearray(out.read_bytes())
    at = data.find(b'"seq":3')  # inside entries.jsonl, stored as is: flipping it breaks the member's CRC
    data[at + 6] ^= 0x01
    out.write_bytes(bytes(data))
    report = verify_bundle(out)
    assert _first(report) == ["entry chain", "archive_corrupt", None], report.checks


def test_duplicate_member_names_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "dup.zip"
    with zipfile.ZipFile(BUNDLES / "intact.zip") as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        with pytest.warns(UserWarning):
            zout.writestr(ENTRIES, b"")  # a second entries.jsonl: which one would a reader take?
    assert _first(verify_bundle(out)) == ["archive", "member_duplicated", None]


def test_random_damage_is_reported_never_raised_and_never_passes_altered_content(tmp_path: Path) -> None:
    """Bytes of the intact bundle flipped at random (fixed seed): the verifier never raises, and whenever it says
    intact, every member reads back exactly as in the original (the flip hit only zip metadata such as a time)."""
    rng = random.Random(6962)
    original = (BUNDLES / "intact.zip").read_bytes()
    members = read_members(BUNDLES / "intact.zip")[1]
    passed = 0
    for i in range(150):
        data = bytearray(original)
        for _ in range(rng.choice((1, 1, 2, 8))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"m{i}.zip"
        path.write_bytes(bytes(data))
        report = verify_bundle(path, trusted_keys=[TRUSTED])
        if report.intact:
            passed += 1
            assert read_members(path)[1] == members
    assert passed < 150  # most flips land in compressed data or hashes, and are caught


def test_the_audit_key_signs_only_bundle_manifests(sqlite_engine: Engine, key: Ed25519PrivateKey) -> None:
    from audit import InvalidAuditEvent

    log = AuditLog(sqlite_engine, key)
    manifest = b'{"format":"provatar.audit.bundle/v1","origin":"provatar"}'
    key.public_key().verify(log.sign_manifest(manifest), manifest)
    for not_a_manifest in (b"{", b"[]", b'{"kind":"provatar.audit.checkpoint/v1","size":1}'):
        with pytest.raises(InvalidAuditEvent):
            log.sign_manifest(not_a_manifest)


def test_size_ranges() -> None:
    assert size_ranges([]) == []
    assert size_ranges([1, 2, 3, 5, 6, 9]) == [[1, 3], [5, 6], [9, 9]]
    assert size_ranges([4, 4, 5]) == [[4, 5]]


def _fingerprint(key: Ed25519PublicKey) -> str:
    from audit.keys import key_id_for

    return key_id_for(key)


def _other_sqlite(tmp_path: Path) -> Engine:
    from sqlmodel import SQLModel, create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    SQLModel.metadata.create_all(engine)
    return engine


assert FAILED == "failed"  # the status names the CLI prints


def test_entry_evidence_is_the_earliest_covering_checkpoint_and_a_proof_that_checks(
    sqlite_engine: Engine, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from audit import MissingEntry
    from audit.evidence import entry_evidence
    from audit.merkle import root_from_inclusion_proof

    log = _log(sqlite_engine, key, tmp_path / "witness.jsonl", 11)
    for seq in (1, 6, 11):
        evidence = entry_evidence(log, seq)
        assert evidence.checkpoint.size == seq  # the service signs a checkpoint per append: the first to cover it
        proof = [bytes.fromhex(h) for h in evidence.inclusion_proof]
        leaf = bytes.fromhex(evidence.entry_hash)
        assert root_from_inclusion_proof(leaf, seq - 1, seq, proof).hex() == evidence.checkpoint.root_hash
    without_witness = AuditLog(sqlite_engine, key, key_id="provatar-audit-1")
    assert entry_evidence(without_witness, 3).checkpoint.size == 11  # only the database's current one
    for seq in (0, 12):
        with pytest.raises(MissingEntry):
            entry_evidence(log, seq)
    with sqlite_engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET entry_hash = :h WHERE seq = 2"), {"h": "ab" * 32})
    with pytest.raises(CheckpointMismatch):
        entry_evidence(log, 6)  # no proof is handed out for a tree that is not the signed one
