"""The append-only, hash-chained audit log with a signed checkpoint.

Each entry's `entry_hash` is the RFC 6962 leaf hash of the canonical JSON of its fields, which include the
previous entry's hash, so editing, reordering or deleting a row breaks the chain at that row. A signed
checkpoint (size, head hash, Merkle root) is rewritten in the same transaction as each append, so truncating
the tail is caught too, and a verifier that kept an old checkpoint can later check inclusion/consistency
against the Merkle root.

Appends commit in their own transaction (a denial must be recorded even when the caller's work rolls back) and
are serialised by a thread lock plus a database lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL
`pg_advisory_xact_lock`), so sequence numbers never fork or skip, whatever the number of threads or processes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, Text, cast, func, insert, select, text, update
from sqlalchemy.engine import Connection, RowMapping

from audit.canonical import canonical_json, canonical_text, normalize
from audit.chain import GENESIS_HASH, ChainVerifier, compute_entry_hash
from audit.errors import (
    AuditError,
    ChainBroken,
    CheckpointMismatch,
    InvalidAuditEvent,
    InvalidSequence,
    UnsupportedDatabase,
    WitnessMismatch,
)
from audit.keys import key_id_for
from audit.merkle import frontier_append, frontier_root
from audit.models import AUDIT_KIND, CHECKPOINT_KIND, HASHED_FIELDS, AuditCheckpoint, AuditEvent
from audit.witness import FileWitness, WitnessedCheckpoint

DEFAULT_ORIGIN = "provatar"
OUTCOMES = frozenset({"ok", "denied", "error", "rejected"})
KNOWN_ACTIONS = frozenset(
    {
        "auth.failed",
        "policy.decision",
        "generation.requested",
        "generation.completed",
        "generation.failed",
        "detection.completed",
        "consent.granted",
        "consent.revoked",
        "subject.enrolled",
        "blocklist.added",
        "request.rejected",
    }
)
# Actions are open-ended (new features add kinds) but must look like `area.verb`, lower snake case.
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_MAX_QUERY_LIMIT = 10_000

_EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]
_CHECKPOINTS = AuditCheckpoint.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class VerifyReport:
    """What `verify()` proved: `entries` rows chain from genesis to `head_hash` and match the signed
    checkpoint."""

    entries: int
    head_hash: str
    checkpoint_size: int
    root_hash: str
    # The newest checkpoint the witness held (its size), checked against the database; None without a witness.
    witnessed_size: int | None = None


def utc_timestamp(moment: datetime | None = None) -> str:
    """Fixed-width UTC ISO-8601 with microseconds (`2026-01-31T12:00:00.000123Z`), the format stored and
    hashed."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        raise InvalidAuditEvent("timestamps must be timezone-aware (naive datetimes are ambiguous)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def checkpoint_message(fields: Mapping[str, Any]) -> bytes:
    """The exact bytes an Ed25519 checkpoint signature covers."""
    return canonical_json(dict(fields))


def verify_checkpoint_signature(checkpoint: AuditCheckpoint, public_key: Ed25519PublicKey) -> None:
    """Raise CheckpointMismatch unless `checkpoint` is signed by `public_key` (usable offline by auditors)."""
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint_message(checkpoint.signed_fields()))
    except (InvalidSignature, ValueError, AuditError) as exc:
        raise CheckpointMismatch(
            f"the signature of checkpoint '{checkpoint.origin}' (size {checkpoint.size}) is not valid "
            f"for key {key_id_for(public_key)}; the checkpoint was edited or signed by another key",
            seq=checkpoint.size or None,
        ) from exc


class AuditLog:
    """Append, verify, query and export the audit log stored in `engine`'s `audit_event` table."""

    def __init__(
        self,
        engine: Engine,
        signing_key: Ed25519PrivateKey,
        *,
        key_id: str | None = None,
        origin: str = DEFAULT_ORIGIN,
        batch_size: int = 1000,
        witness: FileWitness | None = None,
    ) -> None:
        """`witness`: where each signed checkpoint is also appended, outside the database; verify() then checks
        the database against the newest one it holds (rollbacks and emptied logs are caught)."""
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise UnsupportedDatabase(
                f"the audit log serialises appends with SQLite or PostgreSQL locks; "
                f"'{dialect}' is not supported"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._engine = engine
        self._key = signing_key
        self._public_key = signing_key.public_key()
        self.key_id = key_id or key_id_for(self._public_key)
        self.origin = origin
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self.witness = witness
        # A stable 64-bit key for pg_advisory_xact_lock, distinct per log origin.
        digest = hashlib.sha256(b"provatar.audit.append:" + origin.encode()).digest()
        self._pg_lock_key = int.from_bytes(digest[:8], "big", signed=True)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key checkpoints are verified with (publish it for offline auditors)."""
        return self._public_key

    def sign_manifest(self, manifest: bytes) -> bytes:
        """Ed25519 signature of an evidence bundle's manifest (audit.bundle). Only a JSON object that names a bundle
        `format` is signed: a checkpoint's signed message has no such member, so this can never forge one."""
        try:
            parsed = json.loads(manifest)
        except ValueError as exc:
            raise InvalidAuditEvent(f"a bundle manifest must be JSON: {exc}") from exc
        if not isinstance(parsed, dict) or not str(parsed.get("format", "")).startswith("provatar.audit.bundle/"):
            raise InvalidAuditEvent("only a bundle manifest (a JSON object with a bundle `format`) is signed")
        return self._key.sign(manifest)

    # ------------------------------------------------------------------ append

    def append(
        self,
        *,
        action: str,
        actor: str,
        outcome: str,
        subject: str | None = None,
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        within: Callable[[Connection, int], None] | None = None,
    ) -> AuditEvent:
        """Append one entry and commit it (in its own transaction), then return it with its seq and hashes.

        Refuses (CheckpointMismatch) to extend a log whose signed head does not match its last row: signing on
        top of a tampered head would launder the tampering.

        `within(conn, seq)` runs in the same transaction, before the entry is written, with the seq it will get: the
        caller's own change (e.g. a conditional job-state move) commits together with the entry or not at all, and an
        exception it raises writes nothing and propagates. This is how an action is recorded exactly once.
        """
        _validate_event(action=action, actor=actor, outcome=outcome, subject=subject, request_id=request_id)
        clean_details = normalize(dict(details or {}))
        with self._append_transaction() as conn:
            checkpoint = self._read_checkpoint(conn)
            size, head, frontier = self._check_head(conn, checkpoint)
            event = AuditEvent(
                seq=size + 1,
                event_id=str(uuid.uuid4()),
                ts=utc_timestamp(),
                kind=AUDIT_KIND,
                action=action,
                actor=actor,
                subject=subject,
                outcome=outcome,
                request_id=request_id,
                details=clean_details,
                prev_hash=head,
                entry_hash="",
            )
            if within is not None:
                within(conn, event.seq)
            event.entry_hash = compute_entry_hash(event.hashed_fields())
            conn.execute(insert(_EVENTS).values(**event.model_dump()))
            new_frontier = frontier_append(frontier, size, bytes.fromhex(event.entry_hash))
            signed = self._sign(size=event.seq, head_hash=event.entry_hash, frontier=new_frontier)
            values = signed.model_dump()
            if checkpoint is None:
                conn.execute(insert(_CHECKPOINTS).values(**values))
            else:
                conn.execute(
                    update(_CHECKPOINTS).where(_CHECKPOINTS.c.origin == self.origin).values(**values)
                )
        if self.witness is not None:
            # After the commit: the witness may lag the database (a crash right here), never lead it. A witness
            # that cannot be written raises (WitnessUnavailable): the entry is stored, but a rollback past it
            # would go unnoticed, so the caller must hear about it.
            self.witness.record(signed)
        return event

    @contextmanager
    def _append_transaction(self) -> Iterator[Connection]:
        with self._lock:
            if self._engine.dialect.name == "sqlite":
                # pysqlite would open a deferred transaction; take the write lock up front instead, so two
                # processes cannot both read the same head and then race to insert the same seq.
                with self._engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        conn.exec_driver_sql("ROLLBACK")
                        raise
                    conn.exec_driver_sql("COMMIT")
            else:
                with self._engine.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._pg_lock_key})
                    yield conn

    def _check_head(
        self, conn: Connection, checkpoint: AuditCheckpoint | None
    ) -> tuple[int, str, list[bytes]]:
        """Cheap O(1) integrity check of the log's end before extending it; returns (size, head, frontier)."""
        last = conn.execute(
            select(_EVENTS.c.seq, _EVENTS.c.entry_hash).order_by(_EVENTS.c.seq.desc()).limit(1)
        ).first()
        if checkpoint is None:
            if last is not None:
                raise CheckpointMismatch(
                    f"no signed checkpoint for log '{self.origin}' although entries exist", seq=last.seq
                )
            return 0, GENESIS_HASH, []
        verify_checkpoint_signature(checkpoint, self._public_key)
        frontier = _decode_frontier(checkpoint)
        if frontier_root(frontier).hex() != checkpoint.root_hash:
            raise CheckpointMismatch(
                "stored Merkle frontier does not fold to the signed root", seq=checkpoint.size
            )
        found_size = last.seq if last is not None else 0
        if found_size != checkpoint.size:
            raise CheckpointMismatch(
                "the last entry is not the one the checkpoint signed",
                seq=min(found_size, checkpoint.size) + 1,
                expected=f"size {checkpoint.size}",
                found=f"size {found_size}",
            )
        if last is not None and last.entry_hash != checkpoint.head_hash:
            raise CheckpointMismatch(
                "head hash differs from the signed checkpoint",
                seq=checkpoint.size,
                expected=checkpoint.head_hash,
                found=last.entry_hash,
            )
        return checkpoint.size, checkpoint.head_hash, frontier

    def _sign(self, *, size: int, head_hash: str, frontier: Sequence[bytes]) -> AuditCheckpoint:
        checkpoint = AuditCheckpoint(
            origin=self.origin,
            kind=CHECKPOINT_KIND,
            size=size,
            head_hash=head_hash,
            root_hash=frontier_root(frontier).hex(),
            frontier=[h.hex() for h in frontier],
            signed_at=utc_timestamp(),
            key_id=self.key_id,
            signature="",
        )
        signature = self._key.sign(checkpoint_message(checkpoint.signed_fields()))
        checkpoint.signature = base64.b64encode(signature).decode("ascii")
        return checkpoint

    def _read_checkpoint(self, conn: Connection) -> AuditCheckpoint | None:
        row = (
            conn.execute(select(_CHECKPOINTS).where(_CHECKPOINTS.c.origin == self.origin)).mappings().first()
        )
        if row is None:
            return None
        try:
            return AuditCheckpoint(**dict(row))
        except (TypeError, ValueError) as exc:
            raise CheckpointMismatch(f"checkpoint row is malformed: {exc}") from exc

    def checkpoint(self) -> AuditCheckpoint | None:
        """The current signed checkpoint (None for an empty log), e.g. to publish it elsewhere."""
        with self._engine.connect() as conn:
            return self._read_checkpoint(conn)

    # ------------------------------------------------------------------ verify

    def verify(self) -> VerifyReport:
        """Recompute the chain from seq 1 and check it against the signed checkpoint; raise on the first
        problem.

        Raises MissingEntry (a deleted row), ChainBroken (an edited, reordered or swapped row) or
        CheckpointMismatch (truncated tail, bad signature, head/root mismatch, rows beyond the checkpoint).
        Rows are streamed in batches, so memory stays flat for any log size.
        """
        with self._engine.connect() as conn:
            checkpoint = self._read_checkpoint(conn)
            first = conn.execute(select(func.min(_EVENTS.c.seq))).scalar()
        if first is not None and first < 1:
            raise InvalidSequence(first)
        witnessed = self._newest_witnessed()
        if checkpoint is None:
            if first is not None:
                raise CheckpointMismatch(
                    f"no signed checkpoint for log '{self.origin}' although entries exist", seq=first
                )
            if witnessed is not None:
                raise WitnessMismatch(
                    f"the log is empty (no entries, no checkpoint) but the witness recorded a signed checkpoint of "
                    f"{witnessed.checkpoint.size} entries (line {witnessed.line} of {self._witness_path()}): the "
                    "log was emptied or its tables dropped",
                    seq=1,
                )
            return VerifyReport(
                entries=0, head_hash=GENESIS_HASH, checkpoint_size=0, root_hash=frontier_root([]).hex()
            )
        verify_checkpoint_signature(checkpoint, self._public_key)
        if checkpoint.key_id != self.key_id:
            raise CheckpointMismatch(
                "checkpoint names another key id", expected=self.key_id, found=checkpoint.key_id
            )
        if self.witness is not None and witnessed is None:
            raise WitnessMismatch(
                f"the log has a signed checkpoint of {checkpoint.size} entries but the witness "
                f"{self._witness_path()} holds none: it was deleted or replaced (a log that predates witnessing "
                "gets its first witnessed checkpoint with its next entry)",
                seq=checkpoint.size,
            )
        if witnessed is not None and checkpoint.size < witnessed.checkpoint.size:
            raise WitnessMismatch(
                f"the database's signed checkpoint covers {checkpoint.size} entries but the witness recorded "
                f"{witnessed.checkpoint.size} (line {witnessed.line} of {self._witness_path()}): the log was "
                f"rolled back to an older checkpoint; entries {checkpoint.size + 1}..{witnessed.checkpoint.size} "
                "are gone",
                seq=checkpoint.size + 1,
            )

        chain = ChainVerifier()
        for row in self._stream_for_verify(upto=checkpoint.size):
            record = dict(row)
            try:
                record["details"] = json.loads(row["details"])
            except (TypeError, ValueError) as exc:
                raise ChainBroken(row["seq"], "JSON details", f"unparsable details ({exc})") from exc
            chain.feed(record)
            if witnessed is not None and chain.size == witnessed.checkpoint.size:
                _check_witnessed(chain, witnessed, self._witness_path())
        chain.check_checkpoint(checkpoint)
        self._check_nothing_beyond(checkpoint.size)
        count, prev, root = chain.size, chain.head_hash, chain.root_hash
        return VerifyReport(
            entries=count,
            head_hash=prev,
            checkpoint_size=checkpoint.size,
            root_hash=root,
            witnessed_size=witnessed.checkpoint.size if witnessed is not None else None,
        )

    def _witness_path(self) -> str:
        return str(self.witness.path) if self.witness is not None else "-"

    def _newest_witnessed(self) -> WitnessedCheckpoint | None:
        """The newest checkpoint the witness holds for this origin, its signature checked."""
        if self.witness is None:
            return None
        witnessed = self.witness.newest(self.origin)
        if witnessed is None:
            return None
        try:
            verify_checkpoint_signature(witnessed.checkpoint, self._public_key)
        except CheckpointMismatch as exc:
            raise WitnessMismatch(
                f"line {witnessed.line} of the witness {self._witness_path()} is not signed by the audit key: "
                "it was forged or edited",
                seq=witnessed.checkpoint.size,
            ) from exc
        return witnessed

    def _stream_for_verify(self, *, upto: int) -> Iterator[RowMapping]:
        # details is read as text so that a tampered, unparsable value is reported for its row, not for the
        # batch.
        columns = [_EVENTS.c[name] for name in (*HASHED_FIELDS, "entry_hash") if name != "details"]
        columns.append(cast(_EVENTS.c.details, Text).label("details"))
        after = 0
        while True:
            with self._engine.connect() as conn:
                rows = (
                    conn.execute(
                        select(*columns)
                        .where(_EVENTS.c.seq > after, _EVENTS.c.seq <= upto)
                        .order_by(_EVENTS.c.seq)
                        .limit(self._batch_size)
                    )
                    .mappings()
                    .all()
                )
            if not rows:
                return
            yield from rows
            after = rows[-1]["seq"]

    def _check_nothing_beyond(self, size: int) -> None:
        # Read the highest seq before re-reading the checkpoint: an append committing in between only makes
        # the checkpoint larger, so a legitimate concurrent append is never reported.
        with self._engine.connect() as conn:
            highest = conn.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0
        if highest <= size:
            return
        with self._engine.connect() as conn:
            current = self._read_checkpoint(conn)
        if current is None or highest > current.size:
            raise CheckpointMismatch(
                "entries exist beyond the signed checkpoint (inserted outside the log)", seq=size + 1
            )
        verify_checkpoint_signature(current, self._public_key)

    # ------------------------------------------------------------------ read

    def query(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        action: str | Sequence[str] | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[AuditEvent]:
        """Entries matching every given filter, oldest first. `since` is inclusive, `until` exclusive; page
        with `after_seq` = the last seq of the previous page."""
        if not 1 <= limit <= _MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {_MAX_QUERY_LIMIT}")
        stmt = self._filtered(
            since=since, until=until, actor=actor, subject=subject, action=action, after_seq=after_seq
        ).limit(limit)
        with self._engine.connect() as conn:
            return [AuditEvent(**dict(row)) for row in conn.execute(stmt).mappings()]

    def iter_events(
        self,
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        action: str | Sequence[str] | None = None,
        after_seq: int | None = None,
    ) -> Iterator[AuditEvent]:
        """Every matching entry, oldest first, fetched in batches (for exports of any size)."""
        cursor = after_seq
        while True:
            page = self.query(
                since=since,
                until=until,
                actor=actor,
                subject=subject,
                action=action,
                limit=self._batch_size,
                after_seq=cursor,
            )
            yield from page
            if len(page) < self._batch_size:
                return
            cursor = page[-1].seq

    def export_jsonl(
        self,
        fp: IO[str],
        *,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        actor: str | None = None,
        subject: str | None = None,
        action: str | Sequence[str] | None = None,
        after_seq: int | None = None,
    ) -> int:
        """Write one canonical JSON object per matching entry (with seq, prev_hash, entry_hash); return the
        count.

        Each line re-hashes to its `entry_hash` (`compute_entry_hash` of the line minus `entry_hash`), so an
        export can be checked without database access.
        """
        count = 0
        for event in self.iter_events(
            since=since, until=until, actor=actor, subject=subject, action=action, after_seq=after_seq
        ):
            fp.write(canonical_text(event.to_record()))
            fp.write("\n")
            count += 1
        return count

    def _filtered(
        self,
        *,
        since: datetime | str | None,
        until: datetime | str | None,
        actor: str | None,
        subject: str | None,
        action: str | Sequence[str] | None,
        after_seq: int | None,
    ) -> Any:
        stmt = select(_EVENTS).order_by(_EVENTS.c.seq)
        if since is not None:
            stmt = stmt.where(_EVENTS.c.ts >= _as_timestamp(since))
        if until is not None:
            stmt = stmt.where(_EVENTS.c.ts < _as_timestamp(until))
        if actor is not None:
            stmt = stmt.where(_EVENTS.c.actor == actor)
        if subject is not None:
            stmt = stmt.where(_EVENTS.c.subject == subject)
        if isinstance(action, str):
            stmt = stmt.where(_EVENTS.c.action == action)
        elif action is not None:
            stmt = stmt.where(_EVENTS.c.action.in_(list(action)))
        # Rows at seq <= 0 are not part of the log (verify() names them): never shown as if they were.
        stmt = stmt.where(_EVENTS.c.seq > (after_seq if after_seq is not None and after_seq > 0 else 0))
        return stmt


def _validate_event(
    *, action: str, actor: str, outcome: str, subject: str | None, request_id: str | None
) -> None:
    if not isinstance(action, str) or not _ACTION_RE.match(action) or len(action) > 64:
        raise InvalidAuditEvent(
            f"action {action!r} must look like 'area.verb' (lowercase, dotted, <= 64 chars)"
        )
    if outcome not in OUTCOMES:
        raise InvalidAuditEvent(f"outcome {outcome!r} must be one of {sorted(OUTCOMES)}")
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 255:
        raise InvalidAuditEvent("actor must be a non-empty string of at most 255 characters")
    for name, value in (("subject", subject), ("request_id", request_id)):
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise InvalidAuditEvent(f"{name} must be a string of at most 255 characters or None")


def _check_witnessed(chain: ChainVerifier, witnessed: WitnessedCheckpoint, where: str) -> None:
    """The first `witnessed.size` entries must be exactly what the witnessed checkpoint signed."""
    w = witnessed.checkpoint
    if chain.head_hash != w.head_hash or chain.root_hash != w.root_hash:
        raise WitnessMismatch(
            f"entries 1..{w.size} do not hash to the checkpoint the witness recorded (line {witnessed.line} of "
            f"{where}: root {w.root_hash[:16]}…, found {chain.root_hash[:16]}…): the history was rewritten",
            seq=w.size,
        )


def _decode_frontier(checkpoint: AuditCheckpoint) -> list[bytes]:
    try:
        frontier = [bytes.fromhex(h) for h in checkpoint.frontier]
    except (TypeError, ValueError) as exc:
        raise CheckpointMismatch(f"stored Merkle frontier is malformed: {exc}", seq=checkpoint.size) from exc
    if len(frontier) != checkpoint.size.bit_count() or any(len(h) != 32 for h in frontier):
        raise CheckpointMismatch(
            "stored Merkle frontier has the wrong shape for the signed size", seq=checkpoint.size
        )
    return frontier


def _as_timestamp(value: datetime | str) -> str:
    if isinstance(value, datetime):
        return utc_timestamp(value)
    return value
