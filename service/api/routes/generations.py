"""Generations: submit (202 + job), poll status, download the signed MP4."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from sqlmodel import col, select

from generation.controls import Controls
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.paging import page_body
from service.api.uploads import safe_suffix, save_upload
from service.auth import Principal
from service.errors import Conflict, NotFound
from service.models import Generation, GenerationPublic, JobStatus
from service.pagination import keyset_page
from service.pipeline import check_generation_policy, create_generation, validate_inputs

router = APIRouter(prefix="/v1/generations", tags=["generations"])
GeneratePrincipal = Annotated[Principal, RequireScope("generate")]


def _public(gen: Generation, request: Request) -> GenerationPublic:
    out = GenerationPublic.model_validate(gen, from_attributes=True)
    if gen.status == JobStatus.succeeded:
        out.download_url = str(request.url_for("download_generation", generation_id=gen.id))
    return out


@router.post("", status_code=202, response_model=GenerationPublic)
async def submit_generation(
    request: Request,
    rt: RuntimeDep,
    principal: GeneratePrincipal,
    rid: RequestId,
    photo: Annotated[UploadFile, File(description="Portrait photo (JPEG/PNG/WebP) of the consenting subject")],
    audio: Annotated[UploadFile, File(description="Speech audio (wav/mp3/ogg/flac/m4a)")],
    subject_id: Annotated[str, Form(min_length=1, max_length=64)],
    purpose: Annotated[str, Form(min_length=1, max_length=64)],
    seed: Annotated[int, Form(ge=0, le=2**31 - 1, description="same seed, same video")] = 0,
    gaze_x: Annotated[float | None, Form(description="-1..1, + = image right")] = None,
    gaze_y: Annotated[float | None, Form(description="-1..1, + = down")] = None,
    head_distance: Annotated[float | None, Form(description="0.5..2, 1 = as in the photo")] = None,
    emotion: Annotated[str | None, Form(description="neutral|happy|sad|angry|surprised")] = None,
    emotion_intensity: Annotated[float | None, Form(description="0..1")] = None,
    motion_intensity: Annotated[float | None, Form(description="0..3 (head, brows, gaze)")] = None,
    lipsync: Annotated[str | None, Form(description="auto|phonemes|acoustic")] = None,
) -> GenerationPublic:
    """Validate and policy-check now (a denial is a 403 right away), then queue the generation job."""
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
    staging = rt.settings.uploads_dir / f"req_{secrets.token_hex(8)}"
    limit = rt.settings.max_upload_bytes
    try:
        photo_path = await save_upload(
            photo, staging / f"photo{safe_suffix(photo.filename, '.img')}", max_bytes=limit, field="photo"
        )
        audio_path = await save_upload(
            audio, staging / f"audio{safe_suffix(audio.filename, '.audio')}", max_bytes=limit, field="audio"
        )
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
        gen = create_generation(
            rt,
            subject_id=subject_id,
            purpose=purpose,
            client_id=principal.client_id,
            photo_path=photo_path,
            audio_path=audio_path,
            output_path=None,
            request_id=rid,
            params={"controls": controls},
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    rt.audit.append(
        action="generation.requested",
        actor=principal.actor,
        subject=subject_id,
        outcome="ok",
        request_id=rid,
        details={"generation_id": gen.id, "purpose": purpose, "audio_duration_s": round(inputs.audio_duration_s, 3)},
    )
    request.app.state.worker.notify()
    return _public(gen, request)


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
    return page_body(request, response, page, [_public(g, request) for g in page.items])


def _own(session: SessionDep, principal: Principal, generation_id: str) -> Generation:
    gen = session.get(Generation, generation_id)
    # Another client's generation is reported as not found: ids must not leak across clients.
    if gen is None or gen.client_id != principal.client_id:
        raise NotFound(f"no generation {generation_id!r} for this client")
    return gen


@router.get("/{generation_id}", response_model=GenerationPublic)
def get_generation(
    request: Request, session: SessionDep, principal: GeneratePrincipal, generation_id: str
) -> GenerationPublic:
    return _public(_own(session, principal, generation_id), request)


@router.get("/{generation_id}/video", name="download_generation", response_model=None)
def download_generation(
    session: SessionDep, principal: GeneratePrincipal, generation_id: str
) -> FileResponse | JSONResponse:
    """The signed, watermarked MP4 once the job has succeeded (409 before that)."""
    gen = _own(session, principal, generation_id)
    if gen.status != JobStatus.succeeded or not gen.output_path:
        raise Conflict(
            f"generation {generation_id} is {gen.status}; the video is available once it has succeeded",
            code="not_ready",
        )
    return FileResponse(gen.output_path, media_type="video/mp4", filename=f"{gen.id}.mp4")
