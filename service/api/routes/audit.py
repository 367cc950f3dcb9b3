"""Audit log: filter events, verify the chain, export JSONL. Read-only; the log is append-only by construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from audit import AuditError, canonical_text
from service.api.deps import RequireScope, RuntimeDep
from service.api.paging import page_body
from service.auth import Principal
from service.errors import InvalidInput
from service.pagination import Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/audit", tags=["audit"])
AuditReader = Annotated[Principal, RequireScope("audit:read")]


class NdjsonResponse(StreamingResponse):
    """JSON Lines; as the response class, it is also what the OpenAPI documents for the 200."""

    media_type = "application/x-ndjson"


@dataclass(frozen=True)
class AuditFilters:
    """Query filters shared by listing and export (FastAPI reads them from the query string)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    subject: str | None = None
    action: str | None = None


Filters = Annotated[AuditFilters, Depends()]


@router.get("/events")
def list_events(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    _: AuditReader,
    filters: Filters,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Events in sequence order; page with `after` (the `next` link keeps the filters)."""
    after_seq = decode_cursor(after, ["seq"])["seq"] if after else None
    if after_seq is not None and not isinstance(after_seq, int):
        raise InvalidInput("the `after` cursor is damaged", code="invalid_cursor")
    events = rt.audit.query(**asdict(filters), after_seq=after_seq, limit=limit + 1)  # one more: is there a next?
    records = [e.to_record() for e in events[:limit]]
    page = Page(records, encode_cursor({"seq": records[-1]["seq"]}) if len(events) > limit else None)
    return page_body(request, response, page, records)


@router.get("/verify")
def verify_log(rt: RuntimeDep, _: AuditReader) -> dict[str, Any]:
    """Recompute the hash chain and check the signed checkpoint; `intact: false` names the first bad entry."""
    try:
        report = rt.audit.verify()
    except AuditError as exc:
        return {"intact": False, "code": exc.code, "message": str(exc), "seq": exc.seq}
    return {"intact": True, **asdict(report)}


@router.get("/export", response_class=NdjsonResponse)
def export_log(rt: RuntimeDep, _: AuditReader, filters: Filters) -> NdjsonResponse:
    """The (filtered) log as JSON Lines, one canonical entry per line, hashes included for offline checking."""
    lines = (canonical_text(e.to_record()) + "\n" for e in rt.audit.iter_events(**asdict(filters)))
    return NdjsonResponse(
        lines,  # streamed in batches from the database, never the whole log in memory
        headers={"Content-Disposition": 'attachment; filename="provatar-audit.jsonl"'},
    )
