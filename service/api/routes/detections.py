"""Detections: is an uploaded video or image ours, whose generation, and does it look synthetic?"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, File, UploadFile

from service.api.deps import RequestId, RequireScope, RuntimeDep
from service.api.uploads import safe_suffix, save_upload
from service.auth import Principal
from service.detect import run_detection
from service.detect_scope import scoped_report

router = APIRouter(prefix="/v1/detections", tags=["detections"])


@router.post("")
async def create_detection(
    rt: RuntimeDep,
    principal: Annotated[Principal, RequireScope("detect")],
    rid: RequestId,
    file: Annotated[UploadFile, File(description="A video (MP4/MOV/WebM) or an image")],
) -> dict[str, Any]:
    staging = rt.settings.uploads_dir / f"det_{secrets.token_hex(8)}"
    try:
        path = await save_upload(
            file,
            staging / f"media{safe_suffix(file.filename, '.bin')}",
            max_bytes=rt.settings.max_upload_bytes,
            field="file",
        )
        report = await asyncio.to_thread(
            run_detection, rt, path, actor=principal.actor, request_id=rid, filename=file.filename
        )
    finally:
        # Uploaded media is analysed, never kept.
        shutil.rmtree(staging, ignore_errors=True)
    # Another client's generation ids, subject, consent and audit links are for its owner and auditors only.
    return scoped_report(rt, report.to_dict(), principal)
