"""Cursor (keyset) pagination shared by every list: `?after=<opaque cursor>&limit=`.

A cursor is the sort key of the last row a client received, base64url-encoded JSON. Keyset pages stay correct
while rows are added (no skipped or repeated rows, unlike offsets) and cost the same at any depth.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from service.errors import InvalidInput
from service.validation import has_control_chars

T = TypeVar("T")
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(values: dict[str, Any]) -> str:
    raw = json.dumps(values, separators=(",", ":"), default=_json_default).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, keys: Sequence[str]) -> dict[str, Any]:
    """The values in a cursor made by `encode_cursor` with exactly `keys`; InvalidInput(`invalid_cursor`) else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput("the `after` cursor is not one this API made", code="invalid_cursor") from exc
    if not isinstance(values, dict) or set(values) != set(keys):
        raise InvalidInput("the `after` cursor does not belong to this list", code="invalid_cursor")
    for value in values.values():
        # Cursor values go into SQL comparisons: an integer outside BIGINT or a NUL in a string is a database
        # error (500), not an empty page. Our cursors never hold such values, so this one was made by hand.
        if isinstance(value, bool) or (isinstance(value, int) and not -(2**63) <= value < 2**63):
            raise InvalidInput("the `after` cursor is damaged", code="invalid_cursor")
        if isinstance(value, str) and (len(value) > 255 or has_control_chars(value)):
            raise InvalidInput("the `after` cursor is damaged", code="invalid_cursor")
        if not isinstance(value, int | str | float | None) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidInput("the `after` cursor is damaged", code="invalid_cursor")
    return values


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_request")
    return limit


def keyset_page(
    session: Session,
    stmt: Any,
    *,
    keys: Sequence[tuple[str, Any]],
    after: str | None,
    limit: int,
    descending: bool = False,
    parse: dict[str, Callable[[Any], Any]] | None = None,
) -> Page[Any]:
    """One page of `stmt` (a `select(Model)`) ordered by `keys` = [(cursor name, column), ...] (last one unique).

    `parse` turns a cursor value back into the column's type (e.g. `datetime.fromisoformat`).
    """
    check_limit(limit)
    cols = [col for _, col in keys]
    if after is not None:
        values = decode_cursor(after, [name for name, _ in keys])
        try:
            bound = [(parse or {}).get(name, lambda v: v)(values[name]) for name, _ in keys]
        except (TypeError, ValueError) as exc:
            raise InvalidInput("the `after` cursor is damaged", code="invalid_cursor") from exc
        stmt = stmt.where(_after(cols, bound, descending))
    order = [c.desc() if descending else c.asc() for c in cols]
    rows = list(session.exec(stmt.order_by(*order).limit(limit + 1)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = None
    if more and rows:
        last = rows[-1]
        cursor = encode_cursor({name: getattr(last, col.key) for name, col in keys})
    return Page(rows, cursor)


def _after(cols: list[Any], bound: list[Any], descending: bool) -> ColumnElement[bool]:
    """(c1, c2, ...) > (v1, v2, ...) spelled out, which every database plans well and SQLite accepts."""
    clauses = []
    for i, (c, v) in enumerate(zip(cols, bound, strict=True)):
        prefix = [cols[j] == bound[j] for j in range(i)]
        clauses.append(and_(*prefix, c < v if descending else c > v))
    return or_(*clauses)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot put {type(value).__name__} in a cursor")
