"""Reviewer: the audit timeline (filters, pagination), one entry in its chain with its inclusion proof, "verify
now", the JSONL export and the offline-verifiable evidence bundle."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from audit import canonical_text
from audit.bundle import export_bundle
from audit.errors import AuditError
from audit.keys import key_id_for
from service.console.audit_view import OUTCOME_CHOICES, TimelineFilters, entry_place, iter_matching, timeline_page
from service.console.web import ConsoleUser, audit_console, render, require, require_post, runtime
from service.errors import NotFound

router = APIRouter(prefix="/audit")
log = logging.getLogger("provatar.console")
Reviewer = Annotated[ConsoleUser, require("audit:read")]
PAGE_SIZE = 50
_CHUNK = 1 << 16


def _filters(
    since: Annotated[str, Query(max_length=40)] = "",
    until: Annotated[str, Query(max_length=40)] = "",
    actor: Annotated[str, Query(max_length=255)] = "",
    subject: Annotated[str, Query(max_length=255)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    outcome: Annotated[str, Query(max_length=16)] = "",
) -> TimelineFilters:
    return TimelineFilters(
        since.strip(), until.strip(), actor.strip(), subject.strip(), action.strip(), outcome.strip()
    )


Filters = Annotated[TimelineFilters, Depends(_filters)]


@router.get("", response_class=HTMLResponse)
def timeline(
    request: Request,
    user: Reviewer,
    filters: Filters,
    before: Annotated[int | None, Query(ge=1)] = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> HTMLResponse:
    rt = runtime(request)
    page = timeline_page(rt.engine, filters, before=before, after=after, limit=PAGE_SIZE)
    query = filters.active()
    return render(
        request,
        "audit_list.html",
        {
            "page": page,
            "filters": filters,
            "outcomes": OUTCOME_CHOICES,
            "query": urlencode(query),
            "older_url": f"?{urlencode({**query, 'before': page.older})}" if page.older else None,
            "newer_url": f"?{urlencode({**query, 'after': page.newer})}" if page.newer else None,
            "newest_url": f"?{urlencode(query)}" if (before or after) else None,
        },
        user=user,
    )


@router.get("/export")
def export(request: Request, user: Reviewer, filters: Filters) -> StreamingResponse:
    """The filtered entries as JSON Lines (canonical form, hashes included: each line re-hashes to its
    entry_hash)."""
    rt = runtime(request)
    audit_console(request, action="audit.exported", actor=user.actor, details={"filters": filters.active()})
    lines = (canonical_text(e.to_record()) + "\n" for e in iter_matching(rt.engine, filters))
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="provatar-audit.jsonl"'},
    )


def _exporter_version() -> str:
    try:
        return version("provatar")
    except PackageNotFoundError:
        return "unknown"


def _stream_and_close(fh: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := fh.read(_CHUNK):
            yield chunk
    finally:
        fh.close()


@router.post("/bundle")
async def export_evidence_bundle(
    request: Request, user: Annotated[ConsoleUser, require_post("audit:read")]
) -> StreamingResponse:
    """The evidence bundle of `provatar audit export --bundle` (the whole log up to its newest signed checkpoint,
    every checkpoint, consistency proofs, the public key, a signed manifest), for `provatar audit verify-export`.

    Written to a private folder in the data dir, opened, then unlinked before a byte is sent: nothing is left on disk
    whether or not the download completes. A log that does not verify is refused (the page says why), as in the CLI.
    """
    rt = runtime(request)
    folder = rt.settings.uploads_dir / f"bundle_{secrets.token_hex(8)}"
    folder.mkdir(mode=0o700, parents=True)
    try:
        target = folder / "provatar-audit-bundle.zip"
        summary = await asyncio.to_thread(export_bundle, rt.audit, target, exporter_version=_exporter_version())
        fh = open(target, "rb")  # closed by the stream (or below, if auditing fails)
        length = os.fstat(fh.fileno()).st_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        # Who took the evidence out, and exactly what (the entry lands after the bundle's end, in the next one);
        # evidence that could not be audited is not handed out.
        audit_console(
            request, action="audit.exported", actor=user.actor,
            details={"format": "bundle", "entries": summary.entries, "checkpoint_size": summary.size,
                     "root_hash": summary.root_hash, "sha256": summary.sha256},
        )  # fmt: skip
    except BaseException:
        fh.close()
        raise
    name = f"provatar-audit-bundle-{summary.size}.zip"
    return StreamingResponse(
        _stream_and_close(fh),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(length)},
    )


def _verify_context(request: Request, result: dict[str, object] | None) -> dict[str, object]:
    # The key's fingerprint, for `verify-export --fingerprint`: a bundle's own key proves nothing on its own.
    return {"result": result, "fingerprint": key_id_for(runtime(request).audit.public_key)}


@router.get("/verify", response_class=HTMLResponse)
def verify_page(request: Request, user: Reviewer) -> HTMLResponse:
    return render(request, "audit_verify.html", _verify_context(request, None), user=user)


@router.post("/verify", response_class=HTMLResponse)
async def verify_now(request: Request, user: Annotated[ConsoleUser, require_post("audit:read")]) -> HTMLResponse:
    """The whole chain from seq 1, the signed checkpoint and the witness (AuditLog.verify); the first bad entry is
    named and linked."""
    rt = runtime(request)
    try:
        report = await asyncio.to_thread(rt.audit.verify)
        result = {"intact": True, **asdict(report)}
    except AuditError as exc:
        result = {"intact": False, "code": exc.code, "message": str(exc), "seq": exc.seq}
    try:
        audit_console(
            request,
            action="audit.verified",
            actor=user.actor,
            outcome="ok" if result["intact"] else "error",
            details={k: v for k, v in result.items() if k in ("intact", "entries", "code", "seq", "checkpoint_size")},
        )
    except AuditError:
        # A log whose head no longer matches its checkpoint refuses appends; the reviewer still sees the result.
        log.warning("could not audit a console verification of a damaged log", exc_info=True)
    return render(request, "audit_verify.html", _verify_context(request, result), user=user)


@router.get("/{seq}", response_class=HTMLResponse)
def entry(request: Request, user: Reviewer, seq: int) -> HTMLResponse:
    rt = runtime(request)
    place = entry_place(rt.audit, rt.engine, seq)
    if place is None:
        raise NotFound(f"no audit entry {seq}")
    return render(request, "audit_entry.html", {"place": place}, user=user)
