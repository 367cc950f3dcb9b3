"""Write the evidence-bundle test vectors in tests/audit/vectors/bundles/ (reproducible: fixed keys and times).

    PYTHONPATH=. python tests/audit/vectors/make_bundles.py [OUT_DIR]

One intact bundle of an 8-entry log (a signed checkpoint per append, as the service keeps them), and one bundle per
tamper, each made the way an attacker who can edit the file but not sign with the audit key would: after the edit,
the manifest's member digests are recomputed where the tamper says so (its signature cannot be). `expected.json`
names, for each, the first check `provatar audit verify-export` must fail (check, reason, entry/checkpoint) or that
it must pass. The keys are derived from fixed public strings: they sign test data only, never anything real.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.bundle import CHECKPOINTS, ENTRIES, MANIFEST, PROOFS, write_bundle
from audit.canonical import canonical_json
from audit.chain import GENESIS_HASH, compute_entry_hash
from audit.log import checkpoint_message
from audit.merkle import frontier_append, frontier_root
from audit.models import AUDIT_KIND, CHECKPOINT_KIND, HASHED_FIELDS, AuditCheckpoint

ORIGIN = "provatar"
KEY_LABEL = "provatar-audit-1"
SIZE = 8
CREATED_AT = "2026-01-31T12:00:00.000000Z"
ACTIONS = ("service.initialized", "consent.granted", "policy.decision", "generation.requested")
Members = dict[str, bytes]


def test_key(name: str) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key for test vectors only (the seed is public)."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"provatar bundle test vector: {name}".encode()).digest()
    )


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_entries(n: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        fields = {
            "seq": seq,
            "event_id": f"00000000-0000-4000-8000-{seq:012d}",
            "ts": f"2026-01-31T11:{seq:02d}:00.000000Z",
            "kind": AUDIT_KIND,
            "action": ACTIONS[seq % len(ACTIONS)],
            "actor": "cli:operator" if seq % 2 else "client:studio-7",
            "subject": f"subj_{seq % 3:04d}",
            "outcome": "ok" if seq % 5 else "denied",
            "request_id": f"req-{seq:04d}",
            "details": {"n": seq, "score": seq / 8, "reasons": ["consent_revoked"] if seq % 5 == 0 else []},
            "prev_hash": prev,
        }
        assert tuple(fields) == HASHED_FIELDS
        prev = compute_entry_hash(fields)
        entries.append({**fields, "entry_hash": prev})
    return entries


def rechain(entries: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """Recompute entry hashes and links from entry `start` on (what a forger does after editing a row)."""
    out = [dict(e) for e in entries]
    for i in range(start - 1, len(out)):
        out[i]["prev_hash"] = out[i - 1]["entry_hash"] if i else GENESIS_HASH
        out[i]["entry_hash"] = compute_entry_hash({k: out[i][k] for k in HASHED_FIELDS})
    return out


def sign_checkpoints(entries: list[dict[str, Any]], key: Ed25519PrivateKey) -> list[AuditCheckpoint]:
    """One signed checkpoint per append, as AuditLog keeps them (each one also lands in the witness file)."""
    checkpoints: list[AuditCheckpoint] = []
    frontier: list[bytes] = []
    for size, entry in enumerate(entries, start=1):
        frontier = frontier_append(frontier, size - 1, bytes.fromhex(entry["entry_hash"]))
        checkpoint = AuditCheckpoint(
            origin=ORIGIN,
            kind=CHECKPOINT_KIND,
            size=size,
            head_hash=entry["entry_hash"],
            root_hash=frontier_root(frontier).hex(),
            frontier=[h.hex() for h in frontier],
            signed_at=entry["ts"],
            key_id=KEY_LABEL,
            signature="",
        )
        checkpoint.signature = base64.b64encode(key.sign(checkpoint_message(checkpoint.signed_fields()))).decode()
        checkpoints.append(checkpoint)
    return checkpoints


def build(path: Path, entries: list[dict[str, Any]], key: Ed25519PrivateKey) -> None:
    write_bundle(
        path,
        origin=ORIGIN,
        entries=entries,
        checkpoints=sign_checkpoints(entries, key),
        public_key=key.public_key(),
        sign=key.sign,
        created_at=CREATED_AT,
        exporter_version="test-vectors",
    )


def read_members(path: Path) -> tuple[list[zipfile.ZipInfo], Members]:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        return infos, {info.filename: zf.read(info) for info in infos}


def rewrite(src: Path, dst: Path, edit: Callable[[Members], None], *, fix_digests: bool) -> None:
    """Copy `src` to `dst` with `edit` applied to its members; with `fix_digests`, restate the manifest's sha256 and
    length of every member (the manifest's signature, in manifest.sig, is left as it was: it cannot be redone)."""
    infos, members = read_members(src)
    edit(members)
    if fix_digests:
        manifest = json.loads(members[MANIFEST])
        for name in manifest["members"]:
            if name in members:
                data = members[name]
                manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        members[MANIFEST] = canonical_json(manifest)
    names = [i.filename for i in infos] + [n for n in members if n not in {i.filename for i in infos}]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            if name in members:
                info = zipfile.ZipInfo(name, date_time=(2026, 1, 31, 12, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o600 << 16
                zf.writestr(info, members[name])


def _lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _drop_lines(name: str, keep: Callable[[dict[str, Any]], bool]) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        members[name] = _join([line for line in _lines(members[name]) if keep(json.loads(line))])

    return edit


def _swap_entries(a: int, b: int) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        lines = _lines(members[ENTRIES])
        lines[a - 1], lines[b - 1] = lines[b - 1], lines[a - 1]
        members[ENTRIES] = _join(lines)

    return edit


def _set_entries(entries: list[dict[str, Any]]) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        members[ENTRIES] = _join([canonical_json(e) for e in entries])

    return edit


def _edit_checkpoint(size: int, **changes: Any) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        out = []
        for line in _lines(members[CHECKPOINTS]):
            record = json.loads(line)
            if record["size"] == size:
                record.update(changes)
            out.append(canonical_json(record))
        members[CHECKPOINTS] = _join(out)

    return edit


def _flip_proof(size2: int) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        out = []
        for line in _lines(members[PROOFS]):
            record = json.loads(line)
            if record["size2"] == size2:
                first = bytes.fromhex(record["proof"][0])
                record["proof"][0] = (bytes([first[0] ^ 1]) + first[1:]).hex()
            out.append(canonical_json(record))
        members[PROOFS] = _join(out)

    return edit


def _append_to(name: str, data: bytes) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        members[name] = members[name] + data

    return edit


def _edit_manifest(**changes: Any) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        manifest = json.loads(members[MANIFEST])
        manifest.update(changes)
        members[MANIFEST] = canonical_json(manifest)

    return edit


def _chain(*edits: Callable[[Members], None]) -> Callable[[Members], None]:
    def edit(members: Members) -> None:
        for step in edits:
            step(members)

    return edit


def make_all(out: Path) -> dict[str, Any]:
    """Write every vector into `out`; return the expectations (also written as expected.json)."""
    out.mkdir(parents=True, exist_ok=True)
    key = test_key("service")
    entries = make_entries(SIZE)
    intact = out / "intact.zip"
    build(intact, entries, key)
    (out / "trusted_public_key.pem").write_bytes(public_pem(key))

    forged = rechain([*entries[:4], {**entries[4], "actor": "cli:mallory"}, *entries[5:]], 5)
    appended = make_entries(SIZE + 1)[-1]
    appended = {**appended, "prev_hash": entries[-1]["entry_hash"]}
    appended["entry_hash"] = compute_entry_hash({k: appended[k] for k in HASHED_FIELDS})
    tampers: dict[str, tuple[Callable[[Members], None], bool]] = {
        # the newest entries cut off; the checkpoints that cover them are still there
        "truncated_tail": (_drop_lines(ENTRIES, lambda e: e["seq"] <= 6), True),
        # ... and the checkpoints covering them removed too: the signed manifest still lists them
        "truncated_tail_and_checkpoints": (
            _chain(
                _drop_lines(ENTRIES, lambda e: e["seq"] <= 6),
                _drop_lines(CHECKPOINTS, lambda c: c["size"] <= 6),
                _drop_lines(PROOFS, lambda p: p["size2"] <= 6),
            ),
            True,
        ),
        "reordered": (_swap_entries(4, 5), True),
        # entry 5 edited and entries 5..8 re-hashed and re-linked: the chain is whole, the signed roots are not
        "rechained": (_set_entries(forged), True),
        "edited_checkpoint": (_edit_checkpoint(6, root_hash="ab" * 32), True),
        "missing_checkpoint": (_drop_lines(CHECKPOINTS, lambda c: c["size"] != 4), True),
        # a member changed without restating its digest (a blank line: every other check still passes)
        "manifest_mismatch": (_append_to(CHECKPOINTS, b"\n"), False),
        # the manifest itself edited (only its signature can tell)
        "manifest_edited": (_edit_manifest(created_at="2025-01-01T00:00:00.000000Z"), True),
        "proof_altered": (_flip_proof(7), True),
        # an entry added after the newest checkpoint, correctly chained: no signature covers it
        "uncovered_entry": (_set_entries([*entries, appended]), True),
    }
    for name, (edit, fix) in tampers.items():
        rewrite(intact, out / f"{name}.zip", edit, fix_digests=fix)
    # the archive cut short in transfer
    data = intact.read_bytes()
    (out / "corrupt.zip").write_bytes(data[: len(data) * 3 // 5])
    # a whole forged log, re-made and re-signed with the forger's own key: self-consistent, wrong key
    build(out / "forged_key.zip", forged, test_key("attacker"))

    expected: dict[str, Any] = {
        "intact": {"intact": True},
        "truncated_tail": {"first": ["coverage", "entries_truncated", 7]},
        "truncated_tail_and_checkpoints": {"first": ["checkpoint list", "checkpoint_missing", 7]},
        "reordered": {"first": ["entry chain", "entries_reordered", 4]},
        "rechained": {"first": ["checkpoint roots", "checkpoint_root_mismatch", 5]},
        "edited_checkpoint": {"first": ["checkpoint signatures", "checkpoint_signature_invalid", 6]},
        "missing_checkpoint": {"first": ["checkpoint list", "checkpoint_missing", 4]},
        "manifest_mismatch": {"first": ["member digests", "member_digest_mismatch", None]},
        "manifest_edited": {"first": ["manifest signature", "manifest_signature_invalid", None]},
        "proof_altered": {"first": ["consistency proofs", "proof_invalid", 7]},
        "uncovered_entry": {"first": ["coverage", "entries_uncovered", 9]},
        "corrupt": {"first": ["archive", "archive_corrupt", None]},
        # intact as far as the bundle alone can tell; fails once the verifier names the key it trusts
        "forged_key": {"intact": True, "first_with_trusted_key": ["keys", "key_untrusted", None]},
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    return expected


if __name__ == "__main__":
    make_all(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "bundles")
