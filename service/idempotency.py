"""`Idempotency-Key` for submissions (after the IETF httpapi idempotency-key draft and Stripe's practice).

The same key from the same client with the same request within the retention window gets the first response
again, and no second job; the same key with a different request is a 409. Keys live in the database
(`service_idempotency_key`), so they hold across restarts and across API processes on one database. A request
that fails (4xx, denial) releases its key: nothing was created, and the client may retry with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from service.errors import Conflict, InvalidInput
from service.models import IdempotencyKey
from service.runtime import Runtime

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Replay:
    """The stored first response to replay."""

    status: int
    body: dict[str, Any]
    generation_id: str | None


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters", code="invalid_request"
        )
    return key


def fingerprint(fields: dict[str, Any], file_digests: dict[str, str]) -> str:
    """What makes two submissions "the same request": the form fields and the uploaded files' SHA-256 (not the
    raw multipart body, whose boundary differs on every send)."""
    canonical = json.dumps({"fields": fields, "files": file_digests}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(rt: Runtime, *, client_id: str, key: str, request_sha256: str, ttl: timedelta) -> Replay | None:
    """Reserve `key` for this request (None: go ahead and do the work), or return the response to replay.

    Raises Conflict `idempotency_key_reused` for a different request under the same key, and
    `idempotency_request_in_progress` while the first request with it has not finished.
    """
    now = datetime.now(UTC)
    purge_expired(rt, ttl=ttl, client_id=client_id)  # keeps the table bounded without a separate sweeper
    for _ in range(2):
        with rt.session() as session:
            session.add(IdempotencyKey(client_id=client_id, key=key, request_sha256=request_sha256, created_at=now))
            try:
                session.commit()
                return None
            except IntegrityError:
                session.rollback()
            row = session.get(IdempotencyKey, (client_id, key))
            if row is None:  # released in between: try again
                continue
            if _aware(row.created_at) < now - ttl:  # expired: the key may name a new request
                session.delete(row)
                session.commit()
                continue
            if row.request_sha256 != request_sha256:
                raise Conflict(
                    "this Idempotency-Key was used for a different request (other fields or files)",
                    code="idempotency_key_reused",
                    details={"generation_id": row.generation_id},
                )
            if row.response is None or row.response_status is None:
                raise Conflict(
                    "the first request with this Idempotency-Key is still being processed",
                    code="idempotency_request_in_progress",
                )
            return Replay(row.response_status, dict(row.response), row.generation_id)
    raise Conflict("the Idempotency-Key is being claimed concurrently; retry", code="idempotency_request_in_progress")


def complete(
    rt: Runtime, *, client_id: str, key: str, generation_id: str, status: int, response: dict[str, Any]
) -> None:
    """Store the response that later requests with this key get."""
    with rt.session() as session:
        row = session.get(IdempotencyKey, (client_id, key))
        if row is None:
            return
        row.generation_id, row.response_status, row.response = generation_id, status, response
        session.add(row)
        session.commit()


def release(rt: Runtime, *, client_id: str, key: str) -> None:
    """Forget an unfinished claim (the request failed; nothing was created)."""
    with rt.session() as session:
        session.execute(
            delete(IdempotencyKey).where(
                col(IdempotencyKey.client_id) == client_id,
                col(IdempotencyKey.key) == key,
                col(IdempotencyKey.response_status).is_(None),
            )
        )
        session.commit()


def purge_expired(rt: Runtime, *, ttl: timedelta, client_id: str | None = None) -> int:
    """Delete keys older than the retention window (of one client, or all); returns how many."""
    stmt = delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < datetime.now(UTC) - ttl)
    if client_id is not None:
        stmt = stmt.where(col(IdempotencyKey.client_id) == client_id)
    with rt.session() as session:
        result = session.execute(stmt)
        session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite hands back naive UTC
