"""Generations: submit (202 + job, idempotent with a key), poll status, download the signed MP4, cancel, delete."""

from __future__ import annotations

import asyncio
import math
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from sqlmodel import Session, col, select

from generation.controls import Controls
from generation.framing import Framing
from service import idempotency, job_state, output_access
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.downloads import stored_file_response
from service.api.paging import page_body
from service.api.problems import described
from service.api.uploads import safe_suffix, save_upload, share_staged_uploads
from service.auth import Principal
from service.errors import Conflict, Gone, NotFound
from service.jobs import discard_uploads
from service.media_inputs import sha256_file, validate_inputs
from service.models import FINAL_STATUSES, Generation, GenerationPublic, JobStatus
from service.pagination import keyset_page
from service.pipeline import create_generation
from service.policy_check import check_generation_policy
from service.storage import UPLOADS_PREFIX
from service.validation import SAFE_TEXT_PATTERN

router = APIRouter(prefix="/v1/generations", tags=["generations"])
GeneratePrincipal = Annotated[Principal, RequireScope("generate")]


def _public(gen: Generation, request: Request, session: Session | None = None) -> GenerationPublic:
    """The job as the API shows it; with a session, a succeeded job's video is offered only while it may be served
    (output_access decides, from the consent records as they are now)."""
    out = GenerationPublic.model_validate(gen, from_attributes=True)
    out.warnings = [str(w) for w in (gen.params or {}).get("warnings") or []]
    if gen.status != JobStatus.succeeded:
        return out
    if session is not None:
        withheld = output_access.withheld_reason(
            session, gen, retention_days=request.app.state.runtime.settings.output_retention_days
        )
        out.output_withheld = withheld.code if withheld else None
    elif gen.output_deleted_at is not None:
        out.output_withheld = "output_deleted"
    if out.output_withheld is None:
        out.download_url = str(request.url_for("download_generation", generation_id=gen.id))
    return out


@router.post(
    "",
    status_code=202,
    response_model=GenerationPublic,
    responses={409: {"description": "Idempotency-Key reused for a different request, or still in progress"}},
)
async def submit_generation(
    request: Request,
    rt: RuntimeDep,
    principal: GeneratePrincipal,
    rid: RequestId,
    photo: Annotated[UploadFile, File(description="Portrait photo (JPEG/PNG/WebP) of the consenting subject")],
    audio: Annotated[UploadFile, File(description="Speech audio (wav/mp3/ogg/flac/m4a)")],
    subject_id: Annotated[str, Form(min_length=1, max_length=64, pattern=SAFE_TEXT_PATTERN)],
    purpose: Annotated[str, Form(min_length=1, max_length=64, pattern=SAFE_TEXT_PATTERN)],
    seed: Annotated[int, Form(ge=0, le=2**31 - 1, description="same seed, same video")] = 0,
    gaze_x: Annotated[float | None, Form(description="-1..1, + = image right")] = None,
    gaze_y: Annotated[float | None, Form(description="-1..1, + = down")] = None,
    head_distance: Annotated[float | None, Form(description="0.5..2, 1 = as in the photo")] = None,
    emotion: Annotated[str | None, Form(description="neutral|happy|sad|angry|surprised")] = None,
    emotion_intensity: Annotated[float | None, Form(description="0..1")] = None,
    motion_intensity: Annotated[float | None, Form(description="0..3 (head, brows, gaze)")] = None,
    lipsync: Annotated[str | None, Form(description="auto|phonemes|acoustic")] = None,
    framing: Annotated[
        str | None,
        Form(description="crop (a square around the face, default) | full (the whole photo, up to 1920x1080)"),
    ] = None,
    size: Annotated[
        int | None,
        Form(
            description="head crop side, even, 128..1024 (crop: the video's side; full: the most the head is "
            "rendered at); default 512"
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="retry-safe submission: the same key, client and request within 24 h returns the first "
            "response and creates no second job; the same key with a different request is a 409",
        ),
    ] = None,
) -> JSONResponse:
    """Validate and policy-check now (a denial is a 403 right away), then queue the generation job.

    202 with `Location` (the job's URL) and `Retry-After` (seconds until polling is worthwhile)."""
    limiter = request.app.state.limiter
    limiter.hit("submit.client", principal.client_id)
    limiter.hit("submit.ip", request.client.host if request.client else "?")
    controls = {
        "seed": seed,
        "gaze_x": gaze_x,
        "gaze_y": gaze_y,
        "head_distance": head_distance,
        "emotion": emotion,
        "emotion_intensity": emotion_intensity,
        "motion_intensity": motion_intensity,
        "lipsync": lipsync,
    }
    controls = {k: v for k, v in controls.items() if v is not None}
    Controls.from_mapping(controls)  # invalid controls are a 400 before anything is stored
    framed = Framing.from_values(framing, size, default_size=rt.settings.output_size)  # the same for the framing
    key = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    staging = rt.settings.uploads_dir / f"req_{secrets.token_hex(8)}"
    limit = rt.settings.max_upload_bytes
    claimed = shared = False
    try:
        photo_path = await save_upload(
            photo, staging / f"photo{safe_suffix(photo.filename, '.img')}", max_bytes=limit, field="photo"
        )
        audio_path = await save_upload(
            audio, staging / f"audio{safe_suffix(audio.filename, '.audio')}", max_bytes=limit, field="audio"
        )
        if key is not None:
            digests = {"photo": sha256_file(photo_path), "audio": sha256_file(audio_path)}
            fields = {"subject_id": subject_id, "purpose": purpose, "controls": controls}
            if framed != Framing(size=rt.settings.output_size):  # the default leaves the fingerprint as it was
                fields["framing"] = framed.to_params()
            replay = idempotency.claim(
                rt,
                client_id=principal.client_id,
                key=key,
                request_sha256=idempotency.fingerprint(fields, digests),
                ttl=timedelta(hours=rt.settings.idempotency_ttl_hours),
            )
            if replay is not None:  # the same request again: the first response, no second job
                shutil.rmtree(staging, ignore_errors=True)
                return _accepted(replay.body, replay.status, replay=True)
            claimed = True
        inputs = await asyncio.to_thread(validate_inputs, rt, photo_path, audio_path)
        await asyncio.to_thread(
            check_generation_policy,
            rt,
            inputs=inputs,
            subject_id=subject_id,
            client_id=principal.client_id,
            purpose=purpose,
            actor=principal.actor,
            request_id=rid,
        )
        # With a shared bucket, the worker that runs the job may be on another machine: it reads them from there.
        photo_at, audio_at = await asyncio.to_thread(share_staged_uploads, rt.storage, [photo_path, audio_path])
        shared = True
        gen = create_generation(
            rt,
            subject_id=subject_id,
            purpose=purpose,
            client_id=principal.client_id,
            photo_path=photo_at,
            audio_path=audio_at,
            output_path=None,
            request_id=rid,
            params={
                "controls": controls,
                "framing": framed.to_params(),
                **({"idempotency_key": key} if key else {}),
            },
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if shared:
            rt.storage.delete_prefix(f"{UPLOADS_PREFIX}{staging.name}/")
        if claimed and key is not None:
            idempotency.release(rt, client_id=principal.client_id, key=key)
        raise
    rt.audit.append(
        action="generation.requested",
        actor=principal.actor,
        subject=subject_id,
        outcome="ok",
        request_id=rid,
        details={"generation_id": gen.id, "purpose": purpose, "audio_duration_s": round(inputs.audio_duration_s, 3)},
    )
    body = _public(gen, request).model_dump(mode="json")
    # Rendering runs at about 2x real time on a small CPU: a first poll after half the audio's length is useful.
    body["retry_after"] = min(60, max(1, math.ceil(inputs.audio_duration_s / 2)))
    if key is not None:
        idempotency.complete(
            rt, client_id=principal.client_id, key=key, generation_id=gen.id, status=202, response=body
        )
    await asyncio.to_thread(request.app.state.jobs.submit, gen.id)  # the broker, or the in-process worker
    return _accepted(body, 202)


def _accepted(body: dict[str, Any], status: int, *, replay: bool = False) -> JSONResponse:
    headers = {"Location": f"/v1/generations/{body['id']}", "Retry-After": str(body.get("retry_after", 2))}
    if replay:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=status, headers=headers)


@router.get("")
def list_generations(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: GeneratePrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """This client's generations, newest first; page with `after` (the `next` link)."""
    page = keyset_page(
        session,
        select(Generation).where(Generation.client_id == principal.client_id),
        keys=[("created_at", col(Generation.created_at)), ("id", col(Generation.id))],
        after=after,
        limit=limit,
        descending=True,
        parse={"created_at": datetime.fromisoformat},
    )
    return page_body(request, response, page, [_public(g, request, session) for g in page.items])


def _own(session: SessionDep, principal: Principal, generation_id: str) -> Generation:
    gen = session.get(Generation, generation_id)
    # Another client's generation is reported as not found: ids must not leak across clients.
    if gen is None or gen.client_id != principal.client_id:
        raise NotFound(f"no generation {generation_id!r} for this client")
    return gen


@router.get("/{generation_id}", response_model=GenerationPublic)
def get_generation(
    request: Request, response: Response, session: SessionDep, principal: GeneratePrincipal, generation_id: str
) -> GenerationPublic:
    """The job's status; while it is queued or running, `Retry-After` says when to poll again."""
    gen = _own(session, principal, generation_id)
    if gen.status not in FINAL_STATUSES:
        response.headers["Retry-After"] = "2"
    return _public(gen, request, session)


@router.get(
    "/{generation_id}/video",
    name="download_generation",
    response_model=None,
    response_class=Response,
    responses={
        200: {"description": "the MP4", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}},
        206: {
            "description": "the requested byte range (`Range: bytes=...`)",
            "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
        },
        410: described("no longer served; the problem code says why (consent_revoked, retention_expired, ...)"),
        416: {"description": "the requested range is not satisfiable (`Content-Range: bytes */size`)"},
    },
)
def download_generation(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    principal: GeneratePrincipal,
    rid: RequestId,
    generation_id: str,
) -> Response:
    """The signed, watermarked MP4 once the job has succeeded (409 before that). Streamed, with single `Range`
    requests answered 206. 410 Gone, with the reason as the problem code, once it may no longer be served:
    `consent_revoked` / `consent_expired` (decided from the consent records at the time of the request),
    `subject_erased`, `retention_expired`, `output_deleted`. Refusals are audited."""
    gen = _own(session, principal, generation_id)
    if gen.output_deleted_at is None and (gen.status != JobStatus.succeeded or not gen.output_path):
        raise Conflict(
            f"generation {generation_id} is {gen.status}; the video is available once it has succeeded",
            code="not_ready",
        )
    withheld = output_access.withheld_reason(session, gen, retention_days=rt.settings.output_retention_days)
    if withheld is not None:
        rt.audit.append(
            action="generation.download_refused",
            actor=principal.actor,
            subject=gen.subject_id,
            outcome="rejected",
            request_id=rid,
            details={"generation_id": gen.id, "code": withheld.code},
        )
        raise Gone(withheld.message, code=withheld.code)
    assert gen.output_path is not None  # checked above: a succeeded job that was not deleted has its output
    return stored_file_response(request, rt.storage, gen.output_path, media_type="video/mp4", filename=f"{gen.id}.mp4")


@router.post("/{generation_id}/cancel", response_model=GenerationPublic)
def cancel_generation(
    request: Request,
    response: Response,
    rt: RuntimeDep,
    session: SessionDep,
    principal: GeneratePrincipal,
    rid: RequestId,
    generation_id: str,
) -> GenerationPublic:
    """A queued job is cancelled at once (200) and never runs; a running one stops at its next frame (202, then
    `cancelled`). Finished jobs: 409."""
    gen = _own(session, principal, generation_id)
    if gen.status in FINAL_STATUSES and gen.status != JobStatus.cancelled:
        raise Conflict(f"generation {generation_id} already {gen.status}", code="not_cancellable")
    if gen.params.get("live"):
        raise Conflict("a live stream ends when its client closes the WebSocket", code="not_cancellable")
    was = gen.status
    gen = job_state.request_cancel(rt, generation_id)
    if gen.status == JobStatus.cancelled:
        if was != JobStatus.cancelled:
            discard_uploads(rt, generation_id)
    elif gen.status == JobStatus.running:
        response.status_code = 202
        response.headers["Retry-After"] = "1"
    else:
        raise Conflict(f"generation {generation_id} already {gen.status}", code="not_cancellable")
    if was != JobStatus.cancelled:
        rt.audit.append(
            action="generation.cancelled" if gen.status == JobStatus.cancelled else "generation.cancel_requested",
            actor=principal.actor,
            subject=gen.subject_id,
            outcome="ok",
            request_id=rid,
            details={"generation_id": gen.id, "was": was.value},
        )
    return _public(gen, request, session)


@router.delete("/{generation_id}", response_model=GenerationPublic)
def delete_generation_output(
    request: Request,
    rt: RuntimeDep,
    session: SessionDep,
    principal: GeneratePrincipal,
    rid: RequestId,
    generation_id: str,
) -> GenerationPublic:
    """Delete a finished job's video (the job record, its audit entries and provenance stay, so a copy can still be
    traced). Queued or running jobs: 409 (cancel them first). Deleting again changes nothing."""
    gen = _own(session, principal, generation_id)
    if gen.status not in FINAL_STATUSES:
        raise Conflict(f"generation {generation_id} is {gen.status}; cancel it first", code="not_finished")
    if gen.output_deleted_at is None:
        if gen.output_path:
            rt.storage.delete_location(gen.output_path)
        gen.output_deleted_at = datetime.now(UTC)
        gen.output_deleted_reason = "deleted"
        session.add(gen)
        session.commit()
        session.refresh(gen)
        rt.audit.append(
            action="generation.output_deleted",
            actor=principal.actor,
            subject=gen.subject_id,
            outcome="ok",
            request_id=rid,
            details={"generation_id": gen.id, "status": gen.status.value},
        )
    return _public(gen, request)
