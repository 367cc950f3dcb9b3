"""Subjects, consent records and the block list. Embeddings and photos never appear in responses."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from sqlmodel import col, select

from safeguards.blocklist import list_blocked
from safeguards.consent import BlockedIdentityPublic, ConsentRecordPublic, Subject, SubjectPublic
from safeguards.consent_records import list_consents
from safeguards.subjects import get_subject
from service import blocklist_ops, consent_ops, erasure
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.paging import page_body
from service.api.uploads import read_upload
from service.auth import Principal
from service.pagination import keyset_page

router = APIRouter(prefix="/v1", tags=["consent"])
Reader = Annotated[Principal, RequireScope("consent:read")]
Writer = Annotated[Principal, RequireScope("consent:write")]


def _subject_view(session: SessionDep, subject_id: str) -> dict[str, Any]:
    subject = get_subject(session=session, subject_id=subject_id)
    return {
        **SubjectPublic.model_validate(subject, from_attributes=True).model_dump(mode="json"),
        "consents": [
            ConsentRecordPublic.model_validate(c, from_attributes=True).model_dump(mode="json")
            for c in list_consents(session=session, subject_id=subject_id)
        ],
    }


@router.post("/subjects", status_code=201)
async def enroll_subject(
    rt: RuntimeDep,
    principal: Writer,
    rid: RequestId,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    purposes: Annotated[list[str], Form(description="Purposes consented to (repeat the field)")],
    photos: Annotated[list[UploadFile], File(description="Reference photos, one face each")],
    evidence: Annotated[UploadFile | None, File(description="Consent evidence (signed form, recording)")] = None,
    evidence_sha256: Annotated[str | None, Form()] = None,
    allowed_clients: Annotated[list[str] | None, Form(description="Client ids (default: any)")] = None,
    expires_days: Annotated[float, Form(gt=0, le=3650)] = 365.0,
    review_justification: Annotated[
        str | None,
        Form(min_length=10, max_length=2000, description="Officer's reason to enroll a photo close to a blocked one"),
    ] = None,
    new_consent_after_erasure: Annotated[
        bool,
        Form(description="Officer confirms a new consent (with new evidence) for a person who was erased"),
    ] = False,
) -> dict[str, Any]:
    """Enroll a subject from reference photos and record their consent in one step."""
    limit = rt.settings.max_upload_bytes
    contents = [await read_upload(p, limit, "photo") for p in photos]
    evidence_bytes = await read_upload(evidence, limit, "evidence") if evidence is not None else None
    digest = consent_ops.evidence_digest(evidence_bytes, evidence_sha256)
    subject, record = await asyncio.to_thread(
        consent_ops.enroll,
        rt,
        name=name,
        photos=contents,
        purposes=purposes,
        clients=allowed_clients or [],
        expires_days=expires_days,
        evidence_sha256=digest,
        actor=principal.actor,
        request_id=rid,
        review_justification=review_justification,
        new_consent_after_erasure=new_consent_after_erasure,
    )
    with rt.session() as session:
        return _subject_view(session, subject.id)


@router.get("/subjects")
def get_subjects(
    request: Request,
    response: Response,
    session: SessionDep,
    _: Reader,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Subjects, oldest first; page with `after` (the `next` link)."""
    page = keyset_page(
        session,
        select(Subject),
        keys=[("created_at", col(Subject.created_at)), ("id", col(Subject.id))],
        after=after,
        limit=limit,
        parse={"created_at": datetime.fromisoformat},
    )
    return page_body(
        request, response, page, [SubjectPublic.model_validate(s, from_attributes=True) for s in page.items]
    )


@router.get("/subjects/{subject_id}")
def get_subject_detail(session: SessionDep, _: Reader, subject_id: str) -> dict[str, Any]:
    return _subject_view(session, subject_id)


@router.post("/subjects/{subject_id}/consents", status_code=201)
async def grant_consent(
    rt: RuntimeDep,
    principal: Writer,
    rid: RequestId,
    subject_id: str,
    purposes: Annotated[list[str], Form()],
    evidence: Annotated[UploadFile | None, File()] = None,
    evidence_sha256: Annotated[str | None, Form()] = None,
    allowed_clients: Annotated[list[str] | None, Form()] = None,
    expires_days: Annotated[float, Form(gt=0, le=3650)] = 365.0,
) -> ConsentRecordPublic:
    evidence_bytes = await read_upload(evidence, rt.settings.max_upload_bytes, "evidence") if evidence else None
    record = consent_ops.grant(
        rt,
        subject_id=subject_id,
        purposes=purposes,
        clients=allowed_clients or [],
        expires_days=expires_days,
        evidence_sha256=consent_ops.evidence_digest(evidence_bytes, evidence_sha256),
        actor=principal.actor,
        request_id=rid,
    )
    return ConsentRecordPublic.model_validate(record, from_attributes=True)


@router.post("/subjects/{subject_id}/revoke")
def revoke_consent(
    rt: RuntimeDep,
    principal: Writer,
    rid: RequestId,
    subject_id: str,
    reason: Annotated[str, Form(min_length=1, max_length=1000)] = "revoked by the subject",
    consent_id: Annotated[str | None, Form()] = None,
) -> ConsentRecordPublic:
    """Revoke consent; the very next generation request for this subject is denied (queued jobs too)."""
    record = consent_ops.revoke(
        rt, subject_id=subject_id, reason=reason, actor=principal.actor, consent_id=consent_id, request_id=rid
    )
    return ConsentRecordPublic.model_validate(record, from_attributes=True)


@router.post("/subjects/{subject_id}/erase")
async def erase_subject(rt: RuntimeDep, principal: Writer, rid: RequestId, subject_id: str) -> dict[str, Any]:
    """Erase the subject (GDPR Art. 17): reference embeddings, photo hashes, stored photos, identity reviews, the
    videos and uploads of their generations, and their name. Their consent is revoked, the subject stays as an
    erased tombstone, and the audit log stays intact. Erasing again changes nothing (`already_erased`).
    The same photo enrolls again only with a new consent (`new_consent_after_erasure`)."""
    report = await asyncio.to_thread(erasure.erase_subject, rt, subject_id, actor=principal.actor, request_id=rid)
    return report.to_dict()


@router.get("/blocklist")
def get_blocklist(session: SessionDep, _: Reader) -> list[BlockedIdentityPublic]:
    return [BlockedIdentityPublic.model_validate(b, from_attributes=True) for b in list_blocked(session=session)]


@router.post("/blocklist", status_code=201)
async def add_to_blocklist(
    rt: RuntimeDep,
    principal: Writer,
    rid: RequestId,
    photo: Annotated[
        list[UploadFile], File(description="Photos of ONE protected person, one face each (repeat the field)")
    ],
    label: Annotated[str, Form(min_length=1, max_length=200)],
    reason: Annotated[str, Form(min_length=1, max_length=1000)] = "public figure",
) -> BlockedIdentityPublic:
    contents = [await read_upload(p, rt.settings.max_upload_bytes, "photo") for p in photo]
    entry = await asyncio.to_thread(
        blocklist_ops.block, rt, photos=contents, label=label, reason=reason, actor=principal.actor, request_id=rid
    )
    return BlockedIdentityPublic.model_validate(entry, from_attributes=True)


@router.delete("/blocklist/{blocked_id}")
def remove_from_blocklist(rt: RuntimeDep, principal: Writer, rid: RequestId, blocked_id: str) -> BlockedIdentityPublic:
    entry = blocklist_ops.unblock(rt, blocked_id=blocked_id, actor=principal.actor, request_id=rid)
    return BlockedIdentityPublic.model_validate(entry, from_attributes=True)
