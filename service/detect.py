"""Detection as a service call: resolve watermark tags against this installation's generations, audit the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import select

from safeguards.cues.track import FaceTrack
from safeguards.detection import DetectionReport, detect_media
from service.errors import describe
from service.models import Generation, JobStatus
from service.runtime import Runtime


def resolve_watermark_tag(rt: Runtime, tag: int) -> dict[str, Any] | None:
    """The generation a watermark tag belongs to, with its consent record, audit entry and stored manifest."""
    with rt.session() as session:
        gen = session.exec(select(Generation).where(Generation.watermark_tag == tag)).first()
        if gen is None:
            return None
        return {
            "generation_id": gen.id,
            "subject_id": gen.subject_id,
            "consent_record_id": gen.consent_record_id,
            "policy_decision_id": gen.policy_decision_id,
            "audit_seq": gen.audit_seq,
            "status": gen.status.value if isinstance(gen.status, JobStatus) else gen.status,
            "created_at": gen.created_at.isoformat(),
            "manifest": json.loads(gen.manifest_json) if gen.manifest_json else None,
        }


def run_detection(
    rt: Runtime,
    path: Path,
    *,
    actor: str,
    request_id: str,
    filename: str | None = None,
    keep_track: list[FaceTrack] | None = None,
) -> DetectionReport:
    """Detect, then audit the outcome (success or failure) under the caller's identity."""
    try:
        report = detect_media(
            path,
            watermark_key=rt.watermark_key,
            trust_anchors_pem=rt.trust_anchors_pem(),
            classifier=rt.classifier,
            fusion=rt.fusion,
            max_image_pixels=rt.settings.max_image_pixels,
            max_seconds=rt.settings.max_detect_seconds,
            resolve_tag=lambda tag: resolve_watermark_tag(rt, tag),
            keep_track=keep_track,
        )
    except Exception as exc:
        problem = describe(exc)
        rt.audit.append(
            action="detection.failed",
            actor=actor,
            outcome="rejected" if problem.http_status < 500 else "error",
            request_id=request_id,
            details={"file": filename or path.name, "code": problem.code, "message": problem.message},
        )
        raise
    rt.audit.append(
        action="detection.completed",
        actor=actor,
        subject=report.watermark.get("subject_id"),
        outcome="ok",
        request_id=request_id,
        details={
            "file": filename or path.name,
            "verdict": report.verdict,
            "c2pa_state": report.c2pa["state"],
            "watermark_found": report.watermark["found"],
            "generation_id": report.watermark.get("generation_id") or report.c2pa.get("generation_id"),
            "classifier_score": report.classifier["score"],
            "probability_synthetic": report.probability.get("synthetic"),
            "threshold": report.probability.get("threshold"),
        },
    )
    return report
