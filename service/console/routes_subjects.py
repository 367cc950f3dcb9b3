"""Subjects and the block list: the reviewer's per-subject history, and the consent officer's actions (enroll,
grant, revoke, block, erase), each confirmed before it runs and audited with the signed-in client as actor."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from safeguards.blocklist import list_blocked
from safeguards.consent import BlockedIdentityPublic, SubjectPublic
from safeguards.subjects import list_subjects
from service import blocklist_ops, consent_ops, erasure
from service.api.uploads import read_upload
from service.console.subject_view import subject_view
from service.console.web import PREFIX, ConsoleUser, audit_console, render, request_id, require, require_post, runtime
from service.errors import ConfirmationMismatch, InvalidInput

router = APIRouter()
Reader = Annotated[ConsoleUser, require("consent:read")]
Officer = Annotated[ConsoleUser, require("consent:write")]
OfficerAction = Annotated[ConsoleUser, require_post("consent:write")]
PAGE_SIZE = 50
_SPLIT = re.compile(r"[\s,]+")

# What the subject page says after an action (a code in the redirect, never free text from the URL).
DONE = {
    "enrolled": "Subject enrolled and consent recorded.",
    "granted": "Consent granted.",
    "revoked": "Consent revoked: new requests are refused and unfinished jobs were cancelled.",
}


def _items(text: str) -> list[str]:
    return [p for p in _SPLIT.split(text.strip()) if p]


async def _read_limited(upload: UploadFile | None, limit: int, field: str) -> bytes | None:
    """An uploaded file's bytes under the upload limit; None when the file input was left empty."""
    if upload is None or not upload.filename:
        return None
    return await read_upload(upload, limit, field)


# --- reading ---------------------------------------------------------------------------------------------------


@router.get("/subjects", response_class=HTMLResponse)
def subjects(request: Request, user: Reader, page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> HTMLResponse:
    with runtime(request).session() as db:
        rows = list_subjects(session=db, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE + 1)
        items = [SubjectPublic.model_validate(s, from_attributes=True) for s in rows[:PAGE_SIZE]]
    return render(request, "subjects.html", {"subjects": items, "page": page, "more": len(rows) > PAGE_SIZE}, user=user)


@router.get("/subjects/new", response_class=HTMLResponse)
def enroll_form(request: Request, user: Officer) -> HTMLResponse:
    return render(request, "subject_new.html", {}, user=user)


@router.get("/subjects/{subject_id}", response_class=HTMLResponse)
def subject_page(
    request: Request, user: Reader, subject_id: str, done: Annotated[str, Query(max_length=20)] = ""
) -> HTMLResponse:
    view = subject_view(runtime(request), subject_id, with_generations=user.can("audit:read"))
    return render(
        request,
        "subject.html",
        {"view": view, "done": DONE.get(done)},
        user=user,
    )


@router.get("/blocklist", response_class=HTMLResponse)
def blocklist(request: Request, user: Reader, done: Annotated[str, Query(max_length=20)] = "") -> HTMLResponse:
    with runtime(request).session() as db:
        entries = [BlockedIdentityPublic.model_validate(b, from_attributes=True) for b in list_blocked(session=db)]
    message = "The identity is on the block list." if done == "blocked" else None
    return render(request, "blocklist.html", {"entries": entries, "done": message}, user=user)


# --- consent officer ---------------------------------------------------------------------------------------------


def _require_checkbox(value: str | None, what: str) -> None:
    if value != "yes":
        raise ConfirmationMismatch(f"tick the box to confirm {what}")


@router.post("/subjects/new", response_model=None)
async def enroll(
    request: Request,
    user: OfficerAction,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    purposes: Annotated[str, Form(min_length=1, max_length=2000)],
    photos: Annotated[list[UploadFile], File()],
    evidence: Annotated[UploadFile | None, File()] = None,
    evidence_sha256: Annotated[str, Form(max_length=64)] = "",
    allowed_clients: Annotated[str, Form(max_length=2000)] = "",
    expires_days: Annotated[float, Form(gt=0, le=3650)] = 365.0,
    confirm: Annotated[str | None, Form()] = None,
    new_consent_after_erasure: Annotated[str | None, Form()] = None,
    review_justification: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    """Enroll from reference photos and record the consent (one step, confirmed by a checkbox: an upload cannot be
    carried over a confirmation page without keeping the photo). The two overrides consent_ops.enroll knows (a new
    consent for an erased person; a photo near a blocked identity, with the officer's reason) are opt-in fields."""
    _require_checkbox(confirm, "that the consent evidence covers this person and these purposes")
    justification = review_justification.strip()
    if justification and len(justification) < 10:
        raise InvalidInput("the reason for enrolling a photo close to a blocked identity needs at least 10 characters")
    rt = runtime(request)
    limit = rt.settings.max_upload_bytes
    contents = [c for c in [await _read_limited(p, limit, "photo") for p in photos] if c is not None]
    if not contents:
        raise InvalidInput("choose at least one reference photo", code="invalid_image")
    digest = consent_ops.evidence_digest(await _read_limited(evidence, limit, "evidence"), evidence_sha256.strip())
    subject, _ = await asyncio.to_thread(
        consent_ops.enroll,
        rt,
        name=name,
        photos=contents,
        purposes=_items(purposes),
        clients=_items(allowed_clients),
        expires_days=expires_days,
        evidence_sha256=digest,
        actor=user.actor,
        request_id=request_id(request),
        review_justification=justification or None,
        new_consent_after_erasure=new_consent_after_erasure == "yes",
    )
    audit_console(request, action="console.subject_enrolled", actor=user.actor, subject=subject.id)
    return RedirectResponse(f"{PREFIX}/subjects/{subject.id}?done=enrolled", status_code=303)


@router.post("/subjects/{subject_id}/grant", response_model=None)
async def grant(
    request: Request,
    user: OfficerAction,
    subject_id: str,
    purposes: Annotated[str, Form(min_length=1, max_length=2000)],
    evidence: Annotated[UploadFile | None, File()] = None,
    evidence_sha256: Annotated[str, Form(max_length=64)] = "",
    allowed_clients: Annotated[str, Form(max_length=2000)] = "",
    expires_days: Annotated[float, Form(gt=0, le=3650)] = 365.0,
    confirm: Annotated[str | None, Form()] = None,
) -> RedirectResponse:
    _require_checkbox(confirm, "that the consent evidence covers these purposes")
    rt = runtime(request)
    digest = consent_ops.evidence_digest(
        await _read_limited(evidence, rt.settings.max_upload_bytes, "evidence"), evidence_sha256.strip()
    )
    await asyncio.to_thread(
        consent_ops.grant,
        rt,
        subject_id=subject_id,
        purposes=_items(purposes),
        clients=_items(allowed_clients),
        expires_days=expires_days,
        evidence_sha256=digest,
        actor=user.actor,
        request_id=request_id(request),
    )
    audit_console(request, action="console.consent_granted", actor=user.actor, subject=subject_id)
    return RedirectResponse(f"{PREFIX}/subjects/{subject_id}?done=granted", status_code=303)


def _confirm_page(
    request: Request, user: ConsoleUser, *, title: str, warning: str, action: str, expected: str,
    fields: dict[str, str], cancel: str, error: str | None = None,
) -> HTMLResponse:  # fmt: skip
    return render(
        request,
        "confirm.html",
        {"title": title, "warning": warning, "action": action, "expected": expected, "fields": fields,
         "cancel": cancel, "error": error},
        status_code=400 if error else 200,
        user=user,
    )  # fmt: skip


@router.post("/subjects/{subject_id}/revoke", response_model=None)
async def revoke(
    request: Request,
    user: OfficerAction,
    subject_id: str,
    reason: Annotated[str, Form(min_length=1, max_length=1000)] = "revoked by the subject",
    confirmation: Annotated[str | None, Form(max_length=200)] = None,
) -> HTMLResponse | RedirectResponse:
    """Two steps: without `confirmation` a page asks to type the subject id; with it matching, revoke."""
    rt = runtime(request)
    view = subject_view(rt, subject_id, with_generations=False)  # 404 page for an unknown subject, before asking
    page = {
        "title": f"Revoke consent of {view.subject.display_name}",
        "warning": "Every unrevoked consent record of this subject is revoked. New generation requests are refused "
        "at once and queued or running jobs are cancelled.",
        "action": f"{PREFIX}/subjects/{subject_id}/revoke",
        "expected": subject_id,
        "fields": {"reason": reason},
        "cancel": f"{PREFIX}/subjects/{subject_id}",
    }
    if confirmation is None:
        return _confirm_page(request, user, **page)
    if confirmation.strip() != subject_id:
        return _confirm_page(request, user, **page, error="The text typed is not the subject id. Nothing was revoked.")
    await asyncio.to_thread(
        consent_ops.revoke, rt, subject_id=subject_id, reason=reason, actor=user.actor, request_id=request_id(request)
    )
    audit_console(request, action="console.consent_revoked", actor=user.actor, subject=subject_id)
    return RedirectResponse(f"{PREFIX}/subjects/{subject_id}?done=revoked", status_code=303)


@router.post("/subjects/{subject_id}/erase", response_model=None)
async def erase(
    request: Request,
    user: OfficerAction,
    subject_id: str,
    confirmation: Annotated[str | None, Form(max_length=200)] = None,
) -> HTMLResponse:
    """Erase a subject (GDPR Art. 17): two steps like revoke, then the ErasureReport (counts and ids only)."""
    rt = runtime(request)
    view = subject_view(rt, subject_id, with_generations=False)
    expected = f"erase {subject_id}"
    page = {
        "title": f"Erase {view.subject.display_name}",
        "warning": "This deletes the subject's name, reference embeddings, photo hashes, stored photos and the "
        "videos and uploads of their generations, and revokes their consent. It cannot be undone. Kept: the consent "
        "records (proof of lawful processing before the erasure), keyed fingerprints that stop the same photos "
        "re-enrolling without a new consent, and the audit log (it holds fingerprints, not the personal data).",
        "action": f"{PREFIX}/subjects/{subject_id}/erase",
        "expected": expected,
        "fields": {},
        "cancel": f"{PREFIX}/subjects/{subject_id}",
    }
    if confirmation is None:
        return _confirm_page(request, user, **page)
    if confirmation.strip() != expected:
        return _confirm_page(request, user, **page, error="The text typed does not match. Nothing was erased.")
    report = await asyncio.to_thread(
        erasure.erase_subject, rt, subject_id, actor=user.actor, request_id=request_id(request)
    )
    audit_console(
        request, action="console.subject_erased", actor=user.actor, subject=subject_id,
        details={"already_erased": report.already_erased, "erasure_audit_seq": report.audit_seq},
    )  # fmt: skip
    return render(request, "erased.html", {"report": report}, user=user)


@router.post("/blocklist", response_model=None)
async def block(
    request: Request,
    user: OfficerAction,
    label: Annotated[str, Form(min_length=1, max_length=200)],
    photos: Annotated[list[UploadFile], File()],
    reason: Annotated[str, Form(min_length=1, max_length=1000)] = "public figure",
    confirm: Annotated[str | None, Form()] = None,
) -> RedirectResponse:
    _require_checkbox(confirm, "that every photo shows the same protected person")
    rt = runtime(request)
    limit = rt.settings.max_upload_bytes
    contents = [c for c in [await _read_limited(p, limit, "photo") for p in photos] if c is not None]
    if not contents:
        raise InvalidInput("choose at least one photo of the person to block", code="invalid_image")
    entry = await asyncio.to_thread(
        blocklist_ops.block, rt, photos=contents, label=label, reason=reason, actor=user.actor,
        request_id=request_id(request),
    )  # fmt: skip
    audit_console(request, action="console.identity_blocked", actor=user.actor, details={"blocked_id": entry.id})
    return RedirectResponse(f"{PREFIX}/blocklist?done=blocked", status_code=303)
