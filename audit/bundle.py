"""Offline-verifiable evidence bundle of the audit log: one zip a regulator can check without our database.

Members (format `provatar.audit.bundle/v1`):

- `entries.jsonl`: every entry from seq 1 to the newest checkpoint's size, one RFC 8785 canonical JSON object a
  line, exactly the fields the chain hashes plus `entry_hash`.
- `checkpoints.jsonl`: every signed checkpoint known (each one the witness file recorded, plus the database's
  current one), ordered by size, duplicates dropped. Each line is what the signature covers plus the signature.
- `proofs.jsonl`: an RFC 6962 consistency proof between each consecutive pair of checkpoints, so that someone who
  kept one earlier checkpoint can check a later one without the entries.
- `keys/<fingerprint>.pem`: the public key(s) the checkpoints are signed with.
- `manifest.json`: format, origin, counts, the sizes of the checkpoints, sha256 and length of each member above,
  created_at and exporter version; canonical JSON.
- `manifest.sig`: an Ed25519 signature of manifest.json's exact bytes by the audit key. It is what makes removing
  whole checkpoints (or the tail of the log together with the checkpoints covering it) detectable: the manifest
  states how many there were, and only the key holder can restate it.

A bundle is the whole log up to one signed checkpoint, never a filtered part: a subset of entries cannot be
checked against a Merkle root. Entries appended while the export runs are left for the next bundle (the newest
checkpoint is read first and bounds the export), so every entry in a bundle is covered by a signature.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.canonical import canonical_json, canonical_text
from audit.chain import ChainVerifier
from audit.errors import CheckpointMismatch, WitnessMismatch
from audit.keys import key_id_for
from audit.log import AuditLog, utc_timestamp, verify_checkpoint_signature
from audit.models import AuditCheckpoint
from audit.proofs import LeafTree

BUNDLE_FORMAT = "provatar.audit.bundle/v1"
MANIFEST = "manifest.json"
MANIFEST_SIGNATURE = "manifest.sig"
ENTRIES = "entries.jsonl"
CHECKPOINTS = "checkpoints.jsonl"
PROOFS = "proofs.jsonl"
KEYS_DIR = "keys/"
# The checkpoint fields a bundle line carries: the signed ones and the signature (the frontier is recomputable).
CHECKPOINT_FIELDS = ("origin", "kind", "size", "head_hash", "root_hash", "signed_at", "key_id", "signature")
# The signature of the manifest covers a message no checkpoint can have (a checkpoint's signed message is a JSON
# object with exactly the seven signed fields; a manifest carries `format`), so the same key signs both safely.
MANIFEST_SIGNATURE_KIND = "provatar.audit.bundle.manifest-signature/v1"


@dataclass(frozen=True)
class BundleSummary:
    """What was written: `entries` entries under `checkpoints` signed checkpoints, the newest at `size`."""

    path: Path
    entries: int
    checkpoints: int
    proofs: int
    size: int
    root_hash: str
    sha256: str


def key_file_name(public_key: Ed25519PublicKey) -> str:
    """`keys/ed25519-<first 16 hex of sha256(raw key)>.pem`: a name derived from the key, never from user text."""
    return KEYS_DIR + key_id_for(public_key).replace(":", "-") + ".pem"


def checkpoint_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """The line a bundle stores for `checkpoint`."""
    return {name: getattr(checkpoint, name) for name in CHECKPOINT_FIELDS}


def size_ranges(sizes: Iterable[int]) -> list[list[int]]:
    """Sorted sizes as inclusive runs ([[1, 40], [42, 42]]): a checkpoint per append makes one run, so the manifest
    stays small however long the log is."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and size == runs[-1][1] + 1:
            runs[-1][1] = size
        elif not runs or size > runs[-1][1]:
            runs.append([size, size])
    return runs


def ordered_checkpoints(checkpoints: Iterable[AuditCheckpoint]) -> list[AuditCheckpoint]:
    """By size (then signing time), exact duplicates dropped: the witness's last line is usually the database's
    current checkpoint."""
    unique: dict[bytes, AuditCheckpoint] = {}
    for checkpoint in checkpoints:
        unique.setdefault(canonical_json(checkpoint_record(checkpoint)), checkpoint)
    return sorted(unique.values(), key=lambda c: (c.size, c.signed_at))


def export_bundle(log: AuditLog, path: Path, *, exporter_version: str, created_at: str | None = None) -> BundleSummary:
    """Write the bundle of `log` up to its current signed checkpoint, with every checkpoint its witness holds.

    The log is verified first (chain, checkpoint, witness: a rolled-back log is refused, not packaged); the plain
    JSONL export stays available for looking into a log that does not verify.
    """
    log.verify()
    current = log.checkpoint()
    checkpoints = [current] if current is not None else []
    if log.witness is not None and current is not None:
        # Lines appended after `current` was read belong to entries this bundle leaves out.
        checkpoints += [w.checkpoint for w in log.witness.checkpoints(log.origin) if w.checkpoint.size <= current.size]
    return write_bundle(
        path,
        origin=log.origin,
        entries=(event.to_record() for event in log.iter_events()),
        checkpoints=checkpoints,
        public_key=log.public_key,
        sign=log.sign_manifest,
        created_at=created_at or utc_timestamp(),
        exporter_version=exporter_version,
    )


def write_bundle(
    path: Path,
    *,
    origin: str,
    entries: Iterable[Mapping[str, Any]],
    checkpoints: Sequence[AuditCheckpoint],
    public_key: Ed25519PublicKey,
    sign: Callable[[bytes], bytes],
    created_at: str,
    exporter_version: str,
) -> BundleSummary:
    """Write the bundle of `entries` (seq 1..n, in order) under `checkpoints` to `path`, atomically, mode 0600.

    Everything packaged is checked first, so that a bundle never carries evidence that fails its own verification:
    the chain, each checkpoint's signature (with `public_key`) and that its head and root are
    those of the first `size` entries. `sign` signs the manifest's bytes with the audit key. Raises
    CheckpointMismatch / WitnessMismatch (naming the checkpoint) or OSError; on any error nothing is left at `path`.
    """
    ordered = ordered_checkpoints(checkpoints)
    for checkpoint in ordered:
        if checkpoint.origin != origin:
            raise CheckpointMismatch(f"checkpoint of log '{checkpoint.origin}' offered for a bundle of '{origin}'")
        verify_checkpoint_signature(checkpoint, public_key)
    newest = ordered[-1].size if ordered else 0
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            stamp = _zip_time(created_at)
            members: dict[str, dict[str, Any]] = {}

            # entries: streamed, chain-checked as they go; their leaf hashes build the tree for roots and proofs
            chain = ChainVerifier()
            leaves: list[bytes] = []
            with _member(zf, ENTRIES, stamp, members) as out:
                for record in entries:
                    if record.get("seq", 0) > newest:
                        break  # appended after the newest checkpoint was read: the next bundle's
                    chain.feed(record)
                    leaves.append(bytes.fromhex(str(record["entry_hash"])))
                    out.write(canonical_text(dict(record)).encode("utf-8") + b"\n")
            if chain.size != newest:
                raise CheckpointMismatch(
                    f"the newest checkpoint covers {newest} entries but the log gave {chain.size}",
                    seq=chain.size + 1,
                )
            tree = LeafTree(leaves)
            for checkpoint in ordered:
                _check_covers(tree, leaves, checkpoint)

            with _member(zf, CHECKPOINTS, stamp, members) as out:
                for checkpoint in ordered:
                    out.write(canonical_json(checkpoint_record(checkpoint)) + b"\n")
            proofs = 0
            with _member(zf, PROOFS, stamp, members) as out:
                for older, newer in zip(ordered, ordered[1:], strict=False):
                    proof = tree.consistency_proof(older.size, newer.size)
                    line = {"size1": older.size, "size2": newer.size, "proof": [h.hex() for h in proof]}
                    out.write(canonical_json(line) + b"\n")
                    proofs += 1
            key_name = key_file_name(public_key)
            with _member(zf, key_name, stamp, members) as out:
                out.write(
                    public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                )

            label_ids = sorted({c.key_id for c in ordered})
            manifest = {
                "format": BUNDLE_FORMAT,
                "origin": origin,
                "created_at": created_at,
                "exporter": {"name": "provatar", "version": exporter_version},
                "entries": chain.size,
                "checkpoints": {
                    "count": len(ordered),
                    "sizes": size_ranges(c.size for c in ordered),
                    "newest": None if not ordered else {"size": newest, "root_hash": ordered[-1].root_hash},
                },
                "proofs": proofs,
                # `key_ids` are the labels the checkpoints name; the fingerprint identifies the key itself.
                "keys": [{"fingerprint": key_id_for(public_key), "key_ids": label_ids, "file": key_name}],
                "members": members,
            }
            manifest_bytes = canonical_json(manifest)
            _write_whole(zf, MANIFEST, stamp, manifest_bytes)
            signature = {
                "kind": MANIFEST_SIGNATURE_KIND,
                "fingerprint": key_id_for(public_key),
                "signature": base64.b64encode(sign(manifest_bytes)).decode("ascii"),
            }
            _write_whole(zf, MANIFEST_SIGNATURE, stamp, canonical_json(signature))
        digest = _sha256_file(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return BundleSummary(
        path=path,
        entries=chain.size,
        checkpoints=len(ordered),
        proofs=proofs,
        size=newest,
        root_hash=tree.root().hex(),
        sha256=digest,
    )


def _check_covers(tree: LeafTree, leaves: Sequence[bytes], checkpoint: AuditCheckpoint) -> None:
    size = checkpoint.size
    if size < 1:
        raise CheckpointMismatch(f"a signed checkpoint of size {size} cannot be bundled", seq=None)
    root = tree.root(size).hex()
    if leaves[size - 1].hex() != checkpoint.head_hash or root != checkpoint.root_hash:
        raise WitnessMismatch(
            f"the checkpoint signed at {checkpoint.signed_at} for size {size} (root {checkpoint.root_hash[:16]}…) "
            f"does not match entries 1..{size} (root {root[:16]}…): the history was rewritten after it was signed",
            seq=size,
        )


class _HashingWriter:
    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp
        self.sha256 = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> None:
        self._fp.write(data)
        self.sha256.update(data)
        self.length += len(data)


@contextmanager
def _member(
    zf: zipfile.ZipFile, name: str, stamp: tuple[int, ...], members: dict[str, Any]
) -> Iterator[_HashingWriter]:
    """Stream one zip member, recording its sha256 and length in `members`."""
    with zf.open(_info(name, stamp), "w", force_zip64=True) as fp:
        writer = _HashingWriter(fp)
        yield writer
    members[name] = {"sha256": writer.sha256.hexdigest(), "bytes": writer.length}


def _write_whole(zf: zipfile.ZipFile, name: str, stamp: tuple[int, ...], data: bytes) -> None:
    zf.writestr(_info(name, stamp), data)


def _info(name: str, stamp: tuple[int, ...]) -> zipfile.ZipInfo:
    # Fixed time and mode: the same log exported twice with the same created_at gives the same members.
    info = zipfile.ZipInfo(name, date_time=stamp)  # type: ignore[arg-type]
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o600 << 16
    return info


def _zip_time(created_at: str) -> tuple[int, ...]:
    # created_at is `YYYY-MM-DDTHH:MM:SS.ffffffZ`; zip stores local-less 2-second resolution from 1980 on.
    try:
        date, time = created_at.rstrip("Z").split("T")
        parts = [int(p) for p in date.split("-")] + [int(float(p)) for p in time.split(":")]
        return tuple(max(1980, parts[0]) if i == 0 else p for i, p in enumerate(parts[:6]))
    except (ValueError, IndexError):
        return (1980, 1, 1, 0, 0, 0)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)
