"""Verify an evidence bundle (audit.bundle) with nothing but the file: no database, no data directory, no network.

The checks run in a fixed order and each gives one line; the first failure is the one named (`BundleReport.
first_failure`, `raise_for_failure()`). Later checks still run where they can, so the report shows everything
that is wrong, but a check that depends on data an earlier one rejected says "not checked" instead of guessing.

What is authenticated by what:
- entries 1..n: by the signed checkpoints (each checkpoint's head hash and Merkle root must be those of the first
  `size` entries). A re-chained forged log (entries edited, every hash recomputed) passes the chain check and fails
  here, at the first checkpoint after the edit.
- checkpoints: by their Ed25519 signatures, and how many there are by the signed manifest (a removed checkpoint,
  or a removed tail together with the checkpoints covering it, is named).
- the key: only by what the verifier trusts. Without `trusted_keys`/`trusted_fingerprints` the bundle asserts its own
  key and a forger can make a self-consistent bundle with a fresh key: the report says so (a warning), and the
  keys check fails when a trusted key is given and the bundle's is not it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.bundle import (
    BUNDLE_FORMAT,
    CHECKPOINTS,
    ENTRIES,
    MANIFEST,
    MANIFEST_SIGNATURE,
    MANIFEST_SIGNATURE_KIND,
    PROOFS,
)
from audit.bundle_archive import (
    MAX_MANIFEST_BYTES,
    MAX_SMALL_MEMBER_BYTES,
    ArchiveCorrupt,
    BundleArchive,
    as_hash,
    as_int,
    manifest_problem,
    parse_checkpoint,
)
from audit.chain import ChainVerifier
from audit.errors import AuditError, BundleInvalid, ChainBroken, MissingEntry
from audit.keys import key_id_for
from audit.log import verify_checkpoint_signature
from audit.models import CHECKPOINT_KIND, AuditCheckpoint
from audit.proofs import ProofError, verify_consistency

OK, FAILED, WARNING, NOT_CHECKED = "ok", "failed", "warning", "not checked"
_REQUIRED = (MANIFEST, MANIFEST_SIGNATURE, ENTRIES, CHECKPOINTS, PROOFS)


@dataclass(frozen=True)
class Check:
    """One verification step: `status` is ok / failed / warning / not checked; `reason` names a failure."""

    name: str
    status: str
    detail: str
    reason: str | None = None
    seq: int | None = None

    @property
    def where(self) -> str:
        """` (entry 7)` or ` (checkpoint at size 7)`: what `seq` counts depends on the check."""
        if self.seq is None:
            return ""
        return (
            f" (checkpoint at size {self.seq})"
            if "checkpoint" in self.name or "proof" in self.name
            else f" (entry {self.seq})"
        )


@dataclass
class BundleReport:
    """Every check's line, and what the bundle holds as far as it was read (entries that chain, checkpoints whose
    signature holds, the newest one's size and root, the keys' fingerprints and whether one was trusted)."""

    path: str
    checks: list[Check] = field(default_factory=list)
    entries: int = 0
    checkpoints: int = 0
    newest_size: int = 0
    root_hash: str | None = None
    fingerprints: list[str] = field(default_factory=list)
    key_trusted: bool = False

    @property
    def first_failure(self) -> Check | None:
        return next((c for c in self.checks if c.status == FAILED), None)

    @property
    def intact(self) -> bool:
        return self.first_failure is None and any(c.status == OK for c in self.checks)

    def raise_for_failure(self) -> None:
        """Raise BundleInvalid naming the first failed check (nothing when the bundle is intact)."""
        first = self.first_failure
        if first is not None:
            raise BundleInvalid(first.name, first.reason or "failed", first.detail, seq=first.seq)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            **asdict(self),
            "intact": self.intact,
            "first_failure": asdict(first) if first is not None else None,
        }


class _Stop(Exception):
    """The bundle cannot be read further (no archive, no manifest): the checks after this one cannot run."""


def verify_bundle(
    path: Path,
    *,
    trusted_keys: Sequence[Ed25519PublicKey] = (),
    trusted_fingerprints: Sequence[str] = (),
) -> BundleReport:
    """Check the bundle at `path`; never raises for what is in it (see BundleReport), only OSError when the file
    itself cannot be opened."""
    report = BundleReport(path=str(path))
    with open(path, "rb") as fp:  # OSError (missing, unreadable) is the caller's: it is about the argument
        try:
            _Verifier(fp, report, list(trusted_keys), list(trusted_fingerprints)).run()
        except _Stop:
            pass
    return report


class _Verifier:
    def __init__(
        self,
        fp: BinaryIO,
        report: BundleReport,
        trusted_keys: list[Ed25519PublicKey],
        trusted_fingerprints: list[str],
    ) -> None:
        self.fp = fp
        self.report = report
        self.trusted = {key_id_for(k) for k in trusted_keys} | set(trusted_fingerprints)
        self.archive: BundleArchive
        self.manifest: dict[str, Any] = {}
        self.manifest_bytes = b""
        self.keys_by_label: dict[str, list[Ed25519PublicKey]] = {}
        self.keys_by_fingerprint: dict[str, Ed25519PublicKey] = {}
        self.checkpoints: list[AuditCheckpoint] = []  # signature-valid ones, file order
        self.all_sizes: list[int] = []  # every parsed checkpoint's size

    def add(self, name: str, status: str, detail: str, reason: str | None = None, seq: int | None = None) -> None:
        self.report.checks.append(Check(name, status, detail, reason, seq))

    def run(self) -> None:
        self.check_archive()
        self.check_manifest()
        self.check_keys()
        self.check_checkpoint_signatures()
        self.check_checkpoint_list()
        self.check_entries()
        self.check_proofs()
        self.check_members()
        self.check_manifest_signature()

    # ----------------------------------------------------------------------------------------------- structure
    def check_archive(self) -> None:
        try:
            self.archive = BundleArchive(self.fp)
        except ArchiveCorrupt as exc:
            self.add("archive", FAILED, str(exc), "archive_corrupt")
            raise _Stop from exc
        names = self.archive.names
        duplicated = sorted(n for n, count in Counter(names).items() if count > 1)
        if duplicated:
            self.add("archive", FAILED, f"member {duplicated[0]} appears more than once", "member_duplicated")
            raise _Stop
        missing = [n for n in _REQUIRED if n not in names]
        if missing:
            self.add("archive", FAILED, f"required member {missing[0]} is absent", "member_missing")
            raise _Stop
        self.add("archive", OK, f"zip archive with {len(names)} members")

    def check_manifest(self) -> None:
        try:
            self.manifest_bytes = self.archive.read(MANIFEST, MAX_MANIFEST_BYTES)
            manifest = json.loads(self.manifest_bytes)
            problem = manifest_problem(manifest)
        except ArchiveCorrupt as exc:
            self.add("manifest", FAILED, str(exc), "archive_corrupt")
            raise _Stop from exc
        except ValueError as exc:
            problem = f"not JSON ({exc})"
        if problem is not None:
            self.add("manifest", FAILED, f"{MANIFEST}: {problem}", "manifest_malformed")
            raise _Stop
        self.manifest = manifest
        self.report.entries = manifest["entries"]
        self.add(
            "manifest",
            OK,
            f"{BUNDLE_FORMAT}, log '{manifest['origin']}', {manifest['entries']} entries, "
            f"{manifest['checkpoints']['count']} checkpoints, created {manifest['created_at']} by "
            f"{manifest['exporter'].get('name')} {manifest['exporter'].get('version')}",
        )

    def check_keys(self) -> None:
        failure: tuple[str, str] | None = None
        for entry in self.manifest["keys"]:
            try:
                pem = self.archive.read(entry["file"], MAX_SMALL_MEMBER_BYTES)
                key = serialization.load_pem_public_key(pem)
            except ArchiveCorrupt as exc:
                failure = failure or (str(exc), "archive_corrupt")
                continue
            except KeyError:
                failure = failure or (f"key file {entry['file']} is not in the archive", "member_missing")
                continue
            except (ValueError, TypeError) as exc:
                failure = failure or (f"{entry['file']} is not a PEM public key ({exc})", "key_invalid")
                continue
            if not isinstance(key, Ed25519PublicKey):
                failure = failure or (f"{entry['file']} is a {type(key).__name__}, not Ed25519", "key_invalid")
                continue
            fingerprint = key_id_for(key)
            if fingerprint != entry["fingerprint"]:
                failure = failure or (
                    f"{entry['file']} has fingerprint {fingerprint}, the manifest says {entry['fingerprint']}",
                    "key_fingerprint_mismatch",
                )
                continue
            self.keys_by_fingerprint[fingerprint] = key
            for label in entry["key_ids"]:
                self.keys_by_label.setdefault(label, []).append(key)
        self.report.fingerprints = sorted(self.keys_by_fingerprint)
        if failure is not None:
            self.add("keys", FAILED, failure[0], failure[1])
            return
        shown = ", ".join(self.report.fingerprints) or "none"
        if not self.trusted:
            self.add(
                "keys",
                WARNING,
                f"signed by {shown}, a key the bundle asserts itself: anyone can build a bundle that verifies with "
                "their own key; pass --public-key (the service's published key) or --fingerprint, or compare the "
                "fingerprint with one obtained from the service another way",
            )
            return
        untrusted = [f for f in self.report.fingerprints if f not in self.trusted]
        if untrusted or not self.report.fingerprints:
            self.add(
                "keys",
                FAILED,
                f"the bundle is signed by {', '.join(untrusted) or 'no key'}, not by a key you trust "
                f"({', '.join(sorted(self.trusted))}): it was not made by the service whose key you hold",
                "key_untrusted",
            )
            return
        self.report.key_trusted = True
        self.add("keys", OK, f"signed by {shown}, the key you trust")

    # ------------------------------------------------------------------------------------------- checkpoints
    def check_checkpoint_signatures(self) -> None:
        failure: Check | None = None
        previous = 0
        try:
            for number, line in self.archive.lines(CHECKPOINTS):
                try:
                    checkpoint = parse_checkpoint(line)
                except ValueError as exc:
                    failure = failure or Check(
                        "checkpoint signatures",
                        FAILED,
                        f"line {number} is not a checkpoint ({exc})",
                        "checkpoint_malformed",
                    )
                    continue
                self.all_sizes.append(checkpoint.size)
                where = f"checkpoint at size {checkpoint.size} (line {number})"
                if checkpoint.origin != self.manifest["origin"] or checkpoint.kind != CHECKPOINT_KIND:
                    failure = failure or Check(
                        "checkpoint signatures",
                        FAILED,
                        f"{where} is of log '{checkpoint.origin}' ({checkpoint.kind}), not of this bundle's "
                        f"'{self.manifest['origin']}' ({CHECKPOINT_KIND})",
                        "checkpoint_foreign",
                        checkpoint.size,
                    )
                    continue
                keys = self.keys_by_label.get(checkpoint.key_id, [])
                if not any(_signed_by(checkpoint, key) for key in keys):
                    failure = failure or Check(
                        "checkpoint signatures",
                        FAILED,
                        f"{where}: the signature is not valid for "
                        + (
                            f"key '{checkpoint.key_id}'"
                            if keys
                            else f"any key in the bundle (it names '{checkpoint.key_id}')"
                        )
                        + "; the checkpoint was edited or signed by another key",
                        "checkpoint_signature_invalid",
                        checkpoint.size,
                    )
                    continue
                if checkpoint.size < previous:
                    failure = failure or Check(
                        "checkpoint signatures",
                        FAILED,
                        f"{where} comes after one of size {previous}: checkpoints were reordered",
                        "checkpoint_order",
                        checkpoint.size,
                    )
                    continue
                previous = checkpoint.size
                self.checkpoints.append(checkpoint)
        except ArchiveCorrupt as exc:
            failure = failure or Check("checkpoint signatures", FAILED, str(exc), "archive_corrupt")
        self.report.checkpoints = len(self.checkpoints)
        if failure is not None:
            self.report.checks.append(failure)
        elif not self.checkpoints:
            self.add("checkpoint signatures", OK, "no checkpoints (an empty log)")
        else:
            self.add(
                "checkpoint signatures",
                OK,
                f"{len(self.checkpoints)} checkpoints, sizes {self.checkpoints[0].size}..{self.checkpoints[-1].size}, "
                "each signed by the bundle's key",
            )

    def check_checkpoint_list(self) -> None:
        """The signed manifest states which checkpoint sizes the bundle holds: a removed line is named."""
        listed: list[int] = []
        for low, high in self.manifest["checkpoints"]["sizes"]:
            listed.extend(range(low, high + 1))
        present = set(self.all_sizes)
        missing = sorted(set(listed) - present)
        extra = sorted(present - set(listed))
        expected_count = self.manifest["checkpoints"]["count"]
        if missing:
            self.add(
                "checkpoint list",
                FAILED,
                f"the manifest lists a checkpoint at size {missing[0]} but the bundle has none"
                + (f" ({len(missing)} missing in all)" if len(missing) > 1 else "")
                + ": it was removed",
                "checkpoint_missing",
                missing[0],
            )
        elif extra:
            self.add(
                "checkpoint list",
                FAILED,
                f"the bundle has a checkpoint at size {extra[0]} that the manifest does not list: it was added",
                "checkpoint_unlisted",
                extra[0],
            )
        elif len(self.all_sizes) != expected_count:
            self.add(
                "checkpoint list",
                FAILED,
                f"the manifest counts {expected_count} checkpoints, the bundle holds {len(self.all_sizes)}",
                "checkpoint_count_mismatch",
            )
        else:
            self.add("checkpoint list", OK, f"the {expected_count} checkpoints the manifest lists are all present")

    # ------------------------------------------------------------------------------------------------ entries
    def check_entries(self) -> None:
        chain = ChainVerifier()
        pending = sorted(self.checkpoints, key=lambda c: c.size)
        index = 0
        matched = 0  # the largest checkpoint size the entries were found to match
        chain_failure: Check | None = None
        root_failure: Check | None = None
        try:
            lines = self.archive.lines(ENTRIES)
            for number, line in lines:
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                except ValueError as exc:
                    chain_failure = Check(
                        "entry chain",
                        FAILED,
                        f"line {number} is not an entry ({exc})",
                        "entry_malformed",
                        chain.next_seq,
                    )
                    break
                try:
                    chain.feed(record)
                except MissingEntry as exc:
                    chain_failure = self._sequence_failure(exc, number, record, lines)
                    break
                except ChainBroken as exc:
                    chain_failure = Check("entry chain", FAILED, exc.message, "chain_broken", exc.seq)
                    break
                while index < len(pending) and pending[index].size == chain.size:
                    checkpoint = pending[index]
                    index += 1
                    if chain.head_hash == checkpoint.head_hash and chain.root_hash == checkpoint.root_hash:
                        matched = checkpoint.size
                    elif root_failure is None:
                        root_failure = _root_mismatch(checkpoint, chain, matched)
        except ArchiveCorrupt as exc:
            chain_failure = Check("entry chain", FAILED, str(exc), "archive_corrupt")  # found at EOF: no seq
        self.report.entries = chain.size

        if chain_failure is not None:
            self.report.checks.append(chain_failure)
        else:
            self.add("entry chain", OK, f"{chain.size} entries link up from genesis to head {chain.head_hash[:16]}…")

        if root_failure is not None:
            self.report.checks.append(root_failure)
        elif index < len(pending) and chain_failure is not None:
            self.add(
                "checkpoint roots",
                NOT_CHECKED,
                f"checkpoints beyond entry {chain.size} not checked: the chain is broken at entry {chain.next_seq}",
            )
        elif pending:
            self.add("checkpoint roots", OK, f"each checkpoint up to size {matched} is the root of its first entries")
        else:
            self.add("checkpoint roots", NOT_CHECKED, "no signed checkpoint to check the entries against")

        self._check_coverage(chain, chain_failure is not None)

    def _check_coverage(self, chain: ChainVerifier, broken: bool) -> None:
        newest = self.checkpoints[-1].size if self.checkpoints else 0
        stated = max(newest, self.manifest["entries"], (self.manifest["checkpoints"]["newest"] or {}).get("size", 0))
        self.report.newest_size = newest
        self.report.root_hash = self.checkpoints[-1].root_hash if self.checkpoints else None
        if broken:
            self.add("coverage", NOT_CHECKED, "the entry chain is broken; coverage is not meaningful")
        elif chain.size < stated:
            self.add(
                "coverage",
                FAILED,
                f"the log was signed up to {stated} entries but the bundle holds {chain.size}: entries "
                f"{chain.size + 1}..{stated} were removed from the end",
                "entries_truncated",
                chain.size + 1,
            )
        elif chain.size > newest:
            self.add(
                "coverage",
                FAILED,
                f"entries {newest + 1}..{chain.size} are not covered by any signed checkpoint (the newest covers "
                f"{newest}): they were added",
                "entries_uncovered",
                newest + 1,
            )
        elif chain.size != self.manifest["entries"]:
            self.add(
                "coverage",
                FAILED,
                f"the manifest counts {self.manifest['entries']} entries, the bundle holds {chain.size}",
                "entry_count_mismatch",
            )
        else:
            self.add("coverage", OK, f"all {chain.size} entries are covered by the newest signed checkpoint")

    def _sequence_failure(
        self, exc: MissingEntry, number: int, record: dict[str, Any], lines: Iterator[tuple[int, bytes]]
    ) -> Check:
        """Entry `exc.seq` was expected at line `number`: reordered (it comes later) or removed (it never does)."""
        found = record.get("seq")
        if not isinstance(found, int) or isinstance(found, bool):
            return Check(
                "entry chain", FAILED, f"line {number} has no valid seq ({found!r})", "entry_malformed", exc.seq
            )
        for later, line in lines:
            try:
                seq = json.loads(line).get("seq")
            except (ValueError, AttributeError):
                continue
            if seq == exc.seq:
                return Check(
                    "entry chain",
                    FAILED,
                    f"entry {exc.seq} is at line {later}, after entry {found} (line {number}): entries were reordered",
                    "entries_reordered",
                    exc.seq,
                )
        return Check(
            "entry chain",
            FAILED,
            f"entry {exc.seq} is missing (line {number} holds entry {found}): it was removed",
            "entry_missing",
            exc.seq,
        )

    # ------------------------------------------------------------------------------------------------- proofs
    def check_proofs(self) -> None:
        proofs: dict[tuple[int, int], list[bytes]] = {}
        count = 0
        try:
            for number, line in self.archive.lines(PROOFS):
                count += 1
                try:
                    item = json.loads(line)
                    key = (as_int(item["size1"]), as_int(item["size2"]))
                    proofs[key] = [as_hash(h) for h in item["proof"]]
                except (ValueError, KeyError, TypeError) as exc:
                    self.add("consistency proofs", FAILED, f"line {number} is not a proof ({exc})", "proof_malformed")
                    return
        except ArchiveCorrupt as exc:
            self.add("consistency proofs", FAILED, str(exc), "archive_corrupt")
            return
        ordered = sorted(self.checkpoints, key=lambda c: c.size)
        for older, newer in zip(ordered, ordered[1:], strict=False):
            pair = f"from size {older.size} to {newer.size}"
            proof = proofs.get((older.size, newer.size))
            if proof is None:
                self.add("consistency proofs", FAILED, f"no proof {pair}", "proof_missing", newer.size)
                return
            try:
                verify_consistency(
                    older.size, bytes.fromhex(older.root_hash), newer.size, bytes.fromhex(newer.root_hash), proof
                )
            except (ProofError, ValueError) as exc:
                self.add(
                    "consistency proofs",
                    FAILED,
                    f"the proof {pair} does not verify ({exc}): the signed trees are not one append-only log",
                    "proof_invalid",
                    newer.size,
                )
                return
        if count != self.manifest["proofs"]:
            self.add(
                "consistency proofs",
                FAILED,
                f"the manifest counts {self.manifest['proofs']} proofs, the bundle holds {count}",
                "proof_count_mismatch",
            )
            return
        pairs = max(len(ordered) - 1, 0)
        self.add("consistency proofs", OK, f"{pairs} proofs: each checkpoint's tree extends the one before")

    # ------------------------------------------------------------------------------------------------ members
    def check_members(self) -> None:
        listed: dict[str, dict[str, Any]] = self.manifest["members"]
        names = set(self.archive.names)
        unlisted = sorted(names - set(listed) - {MANIFEST, MANIFEST_SIGNATURE})
        if unlisted:
            self.add(
                "member digests", FAILED, f"{unlisted[0]} is in the archive but not in the manifest", "member_unlisted"
            )
            return
        for name in sorted(listed):
            if name not in names:
                self.add(
                    "member digests", FAILED, f"{name} is in the manifest but not in the archive", "member_missing"
                )
                return
            try:
                digest, length = self.archive.digest(name)
            except ArchiveCorrupt as exc:
                self.add("member digests", FAILED, str(exc), "archive_corrupt")
                return
            if digest != listed[name]["sha256"] or length != listed[name]["bytes"]:
                self.add(
                    "member digests",
                    FAILED,
                    f"{name} (sha256 {digest[:16]}…, {length} bytes) is not what the manifest lists "
                    f"(sha256 {str(listed[name]['sha256'])[:16]}…, {listed[name]['bytes']} bytes): it was changed",
                    "member_digest_mismatch",
                )
                return
        self.add("member digests", OK, f"{len(listed)} members match the manifest's sha256")

    def check_manifest_signature(self) -> None:
        try:
            envelope = json.loads(self.archive.read(MANIFEST_SIGNATURE, MAX_SMALL_MEMBER_BYTES))
            if envelope.get("kind") != MANIFEST_SIGNATURE_KIND:
                raise ValueError(f"kind is not {MANIFEST_SIGNATURE_KIND}")
            fingerprint = str(envelope["fingerprint"])
            signature = base64.b64decode(envelope["signature"], validate=True)
        except ArchiveCorrupt as exc:
            self.add("manifest signature", FAILED, str(exc), "archive_corrupt")
            return
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            self.add(
                "manifest signature", FAILED, f"{MANIFEST_SIGNATURE} is malformed ({exc})", "manifest_signature_invalid"
            )
            return
        key = self.keys_by_fingerprint.get(fingerprint)
        if key is None:
            self.add(
                "manifest signature",
                FAILED,
                f"signed by {fingerprint}, which is not a key of the bundle",
                "manifest_signature_invalid",
            )
            return
        try:
            key.verify(signature, self.manifest_bytes)
        except InvalidSignature:
            self.add(
                "manifest signature",
                FAILED,
                f"{MANIFEST} is not what {fingerprint} signed: the manifest was edited",
                "manifest_signature_invalid",
            )
            return
        self.add("manifest signature", OK, f"{MANIFEST} signed by {fingerprint}")


def _root_mismatch(checkpoint: AuditCheckpoint, chain: ChainVerifier, matched: int) -> Check:
    """Entries 1..size do not give the signed root: name the checkpoint, and the altered entry when the previous
    checkpoint (one entry earlier, as the log signs one per append) still matched."""
    where = f"{checkpoint.size}" if matched == checkpoint.size - 1 else f"between {matched + 1} and {checkpoint.size}"
    return Check(
        "checkpoint roots",
        FAILED,
        f"entries 1..{checkpoint.size} do not hash to the checkpoint signed at {checkpoint.signed_at} (root "
        f"{checkpoint.root_hash[:16]}…, found {chain.root_hash[:16]}…): entries were altered and the chain "
        f"recomputed; the first altered entry is {where}",
        "checkpoint_root_mismatch",
        checkpoint.size,
    )


def _signed_by(checkpoint: AuditCheckpoint, key: Ed25519PublicKey) -> bool:
    try:
        verify_checkpoint_signature(checkpoint, key)
    except AuditError:  # CheckpointMismatch, or a field that is not canonical JSON
        return False
    return True
