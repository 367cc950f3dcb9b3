"""Analyst: upload a video or image, read the detection report on the page, download it as one HTML file."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import shutil
from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse

from service.api.uploads import safe_suffix, save_upload
from service.auth import Principal
from service.console.web import ConsoleUser, audit_console, render, request_id, require, require_post, runtime
from service.detect import run_detection
from service.detect_report import render_html
from service.detect_scope import scoped_report

router = APIRouter(prefix="/detect")
Analyst = Annotated[ConsoleUser, require("detect")]
# The report is shown in a sandboxed frame (srcdoc inherits this page's policy): its inline CSS and data: crops
# need these two allowances; scripts stay 'self' only and the report has none.
REPORT_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def viewer_of(user: ConsoleUser) -> Principal:
    """The signed-in client as `scoped_report` judges it (its id decides ownership, its scopes audit:read)."""
    return Principal(client_id=user.client_id, scopes=user.scopes, issuer="console")


@router.get("", response_class=HTMLResponse)
def detect_form(request: Request, user: Analyst) -> HTMLResponse:
    limit_mib = runtime(request).settings.max_upload_bytes // (1 << 20)
    return render(request, "detect.html", {"limit_mib": limit_mib}, user=user)


@router.post("", response_class=HTMLResponse)
async def detect(
    request: Request,
    user: Annotated[ConsoleUser, require_post("detect")],
    file: Annotated[UploadFile, File(description="A video (MP4/MOV/WebM) or an image")],
) -> HTMLResponse:
    rt = runtime(request)
    rid = request_id(request)
    staging = rt.settings.uploads_dir / f"det_{secrets.token_hex(8)}"
    kept: list = []
    try:
        path = await save_upload(
            file, staging / f"media{safe_suffix(file.filename, '.bin')}", max_bytes=rt.settings.max_upload_bytes,
            field="file",
        )  # fmt: skip
        report = await asyncio.to_thread(
            run_detection, rt, path, actor=user.actor, request_id=rid, filename=file.filename, keep_track=kept
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # uploaded media is analysed, never kept
    # What the page and the downloaded file show is what the API would return to this client: another client's
    # generation, subject, consent and audit identifiers only for its owner and for auditors (audit:read).
    data = scoped_report(rt, report.to_dict(), viewer_of(user))
    name = file.filename or "upload"
    page = render_html(data, file_name=name, track=kept[0] if kept else None)
    # The audit entry keeps the full link (reviewers with audit:read read the log); the page does not.
    audit_console(
        request, action="console.detection_viewed", actor=user.actor, subject=report.watermark.get("subject_id"),
        details={"file": name, "verdict": report.verdict, "links_hidden": data["links_hidden"]},
    )  # fmt: skip
    download_name = "detection-" + (_UNSAFE_NAME.sub("_", name)[:80] or "report") + ".html"
    return render(
        request,
        "detect_result.html",
        {
            "report": data,
            "file_name": name,
            "report_html": page,
            "download_href": "data:text/html;charset=utf-8;base64," + base64.b64encode(page.encode()).decode(),
            "download_name": download_name,
        },
        user=user,
        headers={"Content-Security-Policy": REPORT_CSP},
    )
