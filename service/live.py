"""Live (streaming) generation: the same responsible chain as `pipeline.run_generation`, frame by frame.

auth (caller) -> policy: consent, identity, limits -> stream frames as audio arrives -> watermark every frame -> JPEG
-> audit. A live stream has no file to sign, so it carries no C2PA manifest; the watermark identifies it, and the
generation row (with its watermark tag) lets a recording of the stream be traced back.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from generation.controls import Controls
from generation.framing import Framing
from generation.media import load_image
from generation.streaming import StreamingSession
from policies import PolicyDecision
from safeguards.watermark import Watermarker, WatermarkPayload
from service import job_state, leases
from service.errors import Denied, StreamStopped, describe
from service.job_generator import job_generator
from service.marking import FrameMarker
from service.media_inputs import ValidatedInputs, photo_type
from service.models import Generation, JobStatus
from service.pipeline import create_generation, update_generation
from service.policy_check import check_generation_policy
from service.runtime import Runtime

JPEG_QUALITY = 90
# How a stream that was stopped (consent gone, cancel requested) is recorded: cancelled, like a file job.
_STOP_CODES = frozenset({"consent_revoked", "consent_expired", "cancelled"})


def stop_reason(rt: Runtime, generation_id: str, consent_record_id: str | None) -> StreamStopped | None:
    """Why a running live stream must stop now, or None. Reads the consent record the stream was admitted under
    (revoked or expired since) and the job's cancel flag (set by a cancel request or by
    `revoked_jobs.cancel_jobs_of_revoked_consent`, from any replica)."""
    from safeguards.consent import ConsentRecord

    now = datetime.now(UTC)
    with rt.session() as session:
        record = session.get(ConsentRecord, consent_record_id) if consent_record_id else None
        gen = session.get(Generation, generation_id)
        if record is not None:
            if record.revoked_at is not None:
                return StreamStopped(
                    "the subject's consent was revoked during the stream; it was stopped", code="consent_revoked"
                )
            expires = record.expires_at if record.expires_at.tzinfo else record.expires_at.replace(tzinfo=UTC)
            if expires <= now:
                return StreamStopped(
                    "the subject's consent expired during the stream; it was stopped", code="consent_expired"
                )
        if gen is not None and gen.cancel_requested_at is not None:
            return StreamStopped("the stream was cancelled on request", code="cancelled")
    return None


@dataclass
class LiveStream:
    """One authorised live generation. Push PCM chunks, get watermarked JPEG frames back."""

    rt: Runtime
    generation_id: str
    actor: str
    subject_id: str
    request_id: str
    decision: PolicyDecision
    session: StreamingSession
    marker: FrameMarker
    heartbeat: leases.Heartbeat
    consent_record_id: str | None = None
    started: float = field(default_factory=time.perf_counter)
    frames_sent: int = 0
    closed: bool = False
    _next_check: float = 0.0

    def check_allowed(self, *, force: bool = False) -> None:
        """Raise StreamStopped when the stream may no longer run (consent revoked or expired, cancel requested).

        Reads the database at most every `live_stop_check_s` seconds (chunks arrive many times a second) unless
        `force`; called at every chunk boundary and, by the WebSocket route, while no audio arrives."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + self.rt.settings.live_stop_check_s
        reason = stop_reason(self.rt, self.generation_id, self.consent_record_id)
        if reason is not None:
            raise reason

    @property
    def fps(self) -> int:
        return self.session.fps

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the frames sent."""
        return self.marker.output_size

    def push(self, samples: np.ndarray) -> list[bytes]:
        """Add mono float32 audio; returns the frames now ready (JPEG). Enforces the audio-length limit."""
        self.check_allowed()
        limit = self.rt.settings.max_audio_seconds
        if self.session.duration_s + len(samples) / self.session.sample_rate > limit:
            raise Denied(
                ["audio_too_long"],
                {"audio_too_long": f"the stream exceeded the {limit:.0f} s audio limit"},
                {"reasons": ["audio_too_long"]},
            )
        return self._encode(self.session.push(samples))

    def finish(self) -> list[bytes]:
        self.check_allowed(force=True)  # the last frames are sent only under a consent still in force
        frames = self._encode(self.session.finish())
        self.close(ok=True)
        return frames

    def _encode(self, frames: list[np.ndarray]) -> list[bytes]:
        out = []
        for crop in frames:
            marked = self.marker.mark(crop)
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(marked, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            )
            if not ok:  # pragma: no cover - OpenCV fails only on invalid input
                raise RuntimeError("JPEG encoding failed")
            out.append(buf.tobytes())
        self.frames_sent += len(out)
        return out

    def close(self, *, ok: bool, code: str | None = None, message: str | None = None) -> None:
        """Record how the stream ended (once)."""
        if self.closed:
            return
        self.closed = True
        self.heartbeat.stop()
        if ok:
            status, action = JobStatus.succeeded, "generation.completed"
        elif code in _STOP_CODES:
            status, action = JobStatus.cancelled, "generation.cancelled"
        else:
            status = JobStatus.denied if code == "audio_too_long" else JobStatus.failed
            action = "generation.failed"
        # Recorded with its audit entry, once, and only while this process still holds the stream's lease.
        job_state.move_audited(
            self.rt,
            self.generation_id,
            status,
            conditions=[leases.held(self.heartbeat.lease.owner)],
            audit={
                "action": action,
                "actor": self.actor,
                "subject": self.subject_id,
                "outcome": "ok" if ok else "error",
                "request_id": self.request_id,
                "details": {
                    "generation_id": self.generation_id,
                    "live": True,
                    "frames": self.frames_sent,
                    "duration_s": round(self.session.duration_s, 3),
                    "code": code,
                    "seconds": round(time.perf_counter() - self.started, 3),
                    "policy_decision_id": self.decision.decision_id,
                },
            },
            progress=1.0 if ok else 0.0,
            error_code=code,
            error_message=message,
        )


def open_live_stream(
    rt: Runtime,
    *,
    photo: bytes,
    subject_id: str,
    purpose: str,
    client_id: str,
    actor: str,
    request_id: str,
    sample_rate: int,
    staging: Path,
    controls: dict[str, Any] | None = None,
    framing: Framing | None = None,
) -> LiveStream:
    """Check the photo and the policy (consent, identity, limits), then prepare the face for streaming.

    Raises the same typed errors as the file pipeline (InvalidImage, Denied, NoFaceFound...).
    """
    kind = photo_type(photo)  # typed by its bytes: refuses audio, video or unknown data before decoding
    staging.mkdir(parents=True, exist_ok=True)
    photo_path = staging / f"photo{kind.extension}"
    photo_path.write_bytes(photo)
    image = load_image(photo, max_pixels=rt.settings.max_image_pixels, portrait=True)
    Controls.from_mapping(controls or {})  # refuse bad controls before the policy check
    # The audio length is not known yet: the policy sees 0 s, and push() enforces the limit as audio arrives.
    decision, facts = check_generation_policy(
        rt,
        inputs=ValidatedInputs(image, None, 0.0, photo_type=kind, photo_sha256=hashlib.sha256(photo).hexdigest()),
        subject_id=subject_id,
        client_id=client_id,
        purpose=purpose,
        actor=actor,
        request_id=request_id,
    )
    gen = create_generation(
        rt,
        subject_id=subject_id,
        purpose=purpose,
        client_id=client_id,
        photo_path=photo_path,
        audio_path=staging / "live-audio",
        output_path=None,
        request_id=request_id,
        params={"live": True, "controls": controls or {}, **({"framing": framing.to_params()} if framing else {})},
    )
    # Held under a lease renewed while the stream is open: if this process dies, the reaper fails the stream
    # (it cannot be resumed) instead of leaving it running; no other replica touches it while it is alive.
    claimed = leases.claim(rt, gen.id)
    assert claimed is not None  # just created, queued, unreserved
    lease = claimed[0]
    try:
        gen = update_generation(
            rt, gen.id, consent_record_id=facts.consent_record_id, policy_decision_id=decision.decision_id
        )
        generator = job_generator(rt, controls or {}, framing)  # the session switches lip sync to the acoustic path
        prepared = generator.prepare(image)
        session = StreamingSession(generator, prepared, sample_rate=sample_rate)
        marker = FrameMarker(
            prepared, Watermarker(WatermarkPayload.for_generation(rt.watermark_key, gen.watermark_tag))
        )
        # Warm the watermark and the JPEG encoder before "ready", so the first audio chunk pays only for its frames.
        cv2.imencode(".jpg", marker.mark(prepared.face.image))
    except BaseException as exc:  # the stream never started: end its job now rather than when the lease lapses
        problem = describe(exc)
        job_state.move(
            rt,
            gen.id,
            JobStatus.failed,
            conditions=[leases.held(lease.owner)],
            error_code=problem.code,
            error_message=problem.message,
        )
        raise
    rt.audit.append(
        action="generation.requested",
        actor=actor,
        subject=subject_id,
        outcome="ok",
        request_id=request_id,
        details={"generation_id": gen.id, "purpose": purpose, "live": True},
    )
    heartbeat = leases.Heartbeat(rt, lease)
    heartbeat.start()
    return LiveStream(
        rt,
        gen.id,
        actor,
        subject_id,
        request_id,
        decision,
        session,
        marker,
        heartbeat,
        consent_record_id=facts.consent_record_id,
    )
