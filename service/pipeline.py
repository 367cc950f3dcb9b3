"""The generation pipeline, in the order a request flows through it:

    auth (done by the caller: API dependency or CLI operator)
      -> policy: consent, identity, limits         check_generation_policy()
      -> generate frames                            TalkingFaceGenerator
      -> watermark every frame                      Watermarker
      -> encode MP4 (H.264 + AAC)                   encode_mp4()
      -> sign C2PA                                  sign_mp4()
      -> audit                                      AuditLog.append()

`run_generation` is that whole flow for one persisted Generation row; nothing else in the service generates video.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError

from generation import TalkingFaceGenerator
from generation.concurrency import threaded
from generation.controls import Controls
from generation.errors import AudioTooLong, InvalidAudio, InvalidImage
from generation.media import AudioTrack, MediaType, encode_mp4, load_audio, load_image, sniff_media_type
from policies import PolicyDecision, evaluate_generation
from policies.facts import GenerationFacts
from safeguards.gate import assess_generation_request
from safeguards.provenance import ManifestSpec, Signer, read_provenance, sign_mp4
from safeguards.watermark import TAG_BITS, WATERMARK_ALGORITHM, Watermarker, WatermarkPayload
from service import consent_ops, job_state
from service.errors import Denied, OutputNotWritable, describe
from service.models import Generation, JobStatus
from service.runtime import Runtime

ProgressFn = Callable[[float], None]
VERSION = "0.1.0"
log = logging.getLogger("provatar.pipeline")
# Names of the files a run stages beside its output (hidden, so a half-written video never looks like a result):
# `.{name}.{token}.unsigned.part.mp4`, `.{name}.{token}.signed.part.mp4`, and the encoder's own `.{...}.part`.
# `service.sweep` removes stale ones a killed process left behind.
PART_GLOBS = (".*.part", ".*.part.mp4")


def check_output_path(out: Path, *, create_parent: bool = False) -> None:
    """Refuse an output path this run could not write, before any work: a directory, a missing or read-only parent.

    Probes by creating (and removing) a hidden temp file beside the target, which is what the run will do: this
    catches read-only mounts, permissions, a full inode table and a parent that is a file. Raises OutputNotWritable.
    """
    if out.is_dir():
        raise OutputNotWritable(f"the output {out} is a directory; name a file such as {out / 'video.mp4'}")
    parent = out.parent
    if create_parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot create the output directory {parent}: {exc.strerror or exc}") from exc
    if not parent.is_dir():
        raise OutputNotWritable(f"the output directory {parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=parent)
    except OSError as exc:
        raise OutputNotWritable(f"cannot write to the output directory {parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file this run created; a failure to clean up must never hide the run's own error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the temp file %s", path, exc_info=True)


def new_generation_id() -> str:
    return "gen_" + secrets.token_hex(8)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ValidatedInputs:
    """Decoded, size-checked inputs. `audio` is None when it was refused for length (the policy then says so).
    The types are what the bytes are (magic numbers), whatever the file names say."""

    photo: np.ndarray
    audio: AudioTrack | None
    audio_duration_s: float
    photo_type: MediaType | None = None
    audio_type: MediaType | None = None
    photo_sha256: str | None = None  # of the photo file's bytes: a human-review approval is bound to it


_PHOTO_FORMATS = "PNG, JPEG or WebP"
_AUDIO_FORMATS = "WAV, MP3, Ogg, FLAC or M4A"


def photo_type(data: bytes | Path, *, name: str | None = None) -> MediaType:
    """The photo's real type from its bytes; the name is only a hint, used in the message when the bytes disagree.

    Raises InvalidImage when the bytes are not an image (audio, video, text, unknown) - before anything is decoded.
    """
    kind = sniff_media_type(data)
    if kind is None or kind.kind != "image":
        what = f"{kind.mime} data" if kind else "not a known image format"
        named = f" (named {name})" if name else ""
        raise InvalidImage(f"the photo{named} is {what}: a {_PHOTO_FORMATS} image is expected")
    return kind


def audio_type(data: bytes | Path, *, name: str | None = None) -> MediaType:
    """The audio's real type from its bytes (a video container counts: its audio track is used).

    Raises InvalidAudio when the bytes are an image or match no known audio container - before decoding.
    """
    kind = sniff_media_type(data)
    if kind is None or kind.kind not in ("audio", "video"):
        what = f"{kind.mime} data" if kind else "not a known audio format"
        named = f" (named {name})" if name else ""
        raise InvalidAudio(f"the audio{named} is {what}: {_AUDIO_FORMATS} is expected")
    return kind


def validate_inputs(rt: Runtime, photo_path: Path, audio_path: Path) -> ValidatedInputs:
    """Type both inputs by their bytes, then decode them under the configured limits; raises typed invalid-input
    errors. Runs before any rendering, so a mistyped upload costs nothing."""
    kinds = photo_type(photo_path, name=photo_path.name), audio_type(audio_path, name=audio_path.name)
    photo = load_image(photo_path, max_pixels=rt.settings.max_image_pixels, portrait=True)
    digest = sha256_file(photo_path)
    typed = {"photo_type": kinds[0], "audio_type": kinds[1], "photo_sha256": digest}
    try:
        audio = load_audio(audio_path, max_seconds=rt.settings.max_audio_seconds)
        return ValidatedInputs(photo, audio, audio.duration_s, **typed)
    except AudioTooLong as exc:
        # Too long is a policy denial (audited with the other reasons), not malformed input.
        return ValidatedInputs(photo, None, exc.duration_s, **typed)


def check_generation_policy(
    rt: Runtime,
    *,
    inputs: ValidatedInputs,
    subject_id: str,
    client_id: str,
    purpose: str,
    actor: str,
    request_id: str,
    generation_id: str | None = None,
) -> tuple[PolicyDecision, GenerationFacts]:
    """Measure the request (faces, likeness, consent, limits), let the policy decide, audit the decision.

    Raises Denied when the policy refuses; the decision is audited either way. A borderline likeness is queued
    for a consent officer (its review id is in the denial); an allowed request that relied on an officer's
    approval counts and audits that use.
    """
    with rt.session() as session:
        facts = assess_generation_request(
            session=session,
            analyzer=rt.analyzer,
            photo_rgb=inputs.photo,
            subject_id=subject_id,
            client_id=client_id,
            purpose=purpose,
            audio_duration_s=inputs.audio_duration_s,
            max_audio_s=rt.settings.max_audio_seconds,
            thresholds=consent_ops.identity_thresholds(rt.settings),
            now=datetime.now(UTC),
            photo_sha256=inputs.photo_sha256,
        )
    decision = evaluate_generation(facts, policy=rt.policy)
    rt.audit.append(
        action="policy.decision",
        actor=actor,
        subject=subject_id,
        outcome="ok" if decision.allowed else "denied",
        request_id=request_id,
        details={"generation_id": generation_id, "decision": decision.to_dict(), "facts": facts.to_dict()},
    )
    if not decision.allowed:
        reviews = consent_ops.queue_identity_reviews(
            rt, facts=facts, decision=decision, actor=actor, request_id=request_id, generation_id=generation_id
        )
        shown = decision.to_dict() | ({"review_ids": [r.id for r in reviews]} if reviews else {})
        raise Denied(decision.reasons, decision.messages, shown)
    consent_ops.record_review_use(rt, facts=facts, actor=actor, request_id=request_id, generation_id=generation_id)
    return decision, facts


def job_generator(rt: Runtime, controls: dict[str, Any]) -> TalkingFaceGenerator:
    """The runtime's generator with this job's controls (gaze, distance, emotion, intensity, seed, lip-sync)."""
    return TalkingFaceGenerator(replace(rt.generator.config, controls=Controls.from_mapping(controls)))


def create_generation(
    rt: Runtime,
    *,
    subject_id: str,
    purpose: str,
    client_id: str,
    photo_path: Path,
    audio_path: Path,
    output_path: Path | None,
    request_id: str,
    params: dict[str, Any] | None = None,
) -> Generation:
    """Persist a queued generation with a fresh, unique 32-bit watermark tag."""
    gen_id = new_generation_id()
    for _ in range(8):
        gen = Generation(
            id=gen_id,
            request_id=request_id,
            subject_id=subject_id,
            purpose=purpose,
            client_id=client_id,
            watermark_tag=secrets.randbits(TAG_BITS),
            photo_path=str(photo_path),
            audio_path=str(audio_path),
            output_path=str(output_path or rt.settings.outputs_dir / f"{gen_id}.mp4"),
            params=params or {},
        )
        with rt.session() as session:
            session.add(gen)
            try:
                session.commit()
            except IntegrityError:  # tag collision (1 in 2^32 per existing generation): draw again
                session.rollback()
                continue
            session.refresh(gen)
            return gen
    raise RuntimeError("could not allocate a unique watermark tag")


def generate_file(
    rt: Runtime,
    *,
    subject_id: str,
    purpose: str,
    client_id: str,
    photo_path: Path,
    audio_path: Path,
    output_path: Path,
    actor: str,
    controls: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> Generation:
    """Generate synchronously (CLI, demo, benchmarks): persist the job, then run the whole chain in this thread.

    The job stops (cancelled) when a cancel is requested for it from elsewhere, e.g. the subject's consent is
    revoked while it renders."""
    from service.jobs import CancelCheck  # the worker's throttled cancel check (service.jobs imports this module)

    gen = create_generation(
        rt,
        subject_id=subject_id,
        purpose=purpose,
        client_id=client_id,
        photo_path=photo_path,
        audio_path=audio_path,
        output_path=output_path,
        request_id=uuid.uuid4().hex,
        params={"controls": controls or {}},
    )
    return run_generation(rt, gen.id, actor=actor, progress=progress, should_stop=CancelCheck(rt, gen.id))


def run_generation(
    rt: Runtime,
    generation_id: str,
    *,
    actor: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generation:
    """Run one persisted generation through the whole chain. Never leaves a partial output file behind.

    `actor` defaults to the client that asked for the generation (the worker acts on its behalf). `should_stop`
    is asked at every frame boundary; True ends the job as `cancelled`. A job that is no longer runnable (e.g.
    cancelled while queued) is returned unchanged.
    """
    started = job_state.move(rt, generation_id, JobStatus.running, started_at=datetime.now(UTC), attempts_inc=True)
    if started is None:
        return update_generation(rt, generation_id)
    gen = started

    def on_frame(i: int) -> None:
        if should_stop is not None and should_stop():
            raise job_state.JobCancelled(generation_id)
        if progress:
            progress(0.95 * (i + 1) / total)

    actor = actor or f"client:{gen.client_id}"
    out = Path(gen.output_path) if gen.output_path else rt.settings.outputs_dir / f"{gen.id}.mp4"
    # Everything is written under temp names beside `out`; `out` itself is only ever replaced by a finished, signed,
    # verified video, and never deleted: a file already there survives any failure (the run did not create it).
    token = secrets.token_hex(4)
    unsigned = out.with_name(f".{out.name}.{token}.unsigned.part.mp4")
    signed = out.with_name(f".{out.name}.{token}.signed.part.mp4")
    stages: list[Generator[np.ndarray, None, None]] = []
    t0 = time.perf_counter()
    try:
        check_output_path(out, create_parent=out.parent == rt.settings.outputs_dir)
        # 1. policy: consent, identity, limits (checked again here: consent may be revoked while a job is queued)
        inputs = validate_inputs(rt, Path(gen.photo_path), Path(gen.audio_path))
        decision, facts = check_generation_policy(
            rt,
            inputs=inputs,
            subject_id=gen.subject_id,
            client_id=gen.client_id,
            purpose=gen.purpose,
            actor=actor,
            request_id=gen.request_id,
            generation_id=gen.id,
        )
        assert inputs.audio is not None  # an over-long audio is denied by the policy above
        consent_id = facts.consent_record_id
        update_generation(rt, gen.id, consent_record_id=consent_id, policy_decision_id=decision.decision_id)

        # 2. generate, 3. watermark every frame, 4. encode
        if should_stop is not None and should_stop():
            raise job_state.JobCancelled(gen.id)
        generator = job_generator(rt, gen.params.get("controls") or {})
        prepared = generator.prepare(inputs.photo)
        if prepared.warnings:  # e.g. a mouth under a hand: the video is made, the result says what was not animated
            gen = update_generation(rt, gen.id, params={**gen.params, "warnings": prepared.warnings})
        total = generator.frame_count(inputs.audio)
        payload = WatermarkPayload.for_generation(rt.watermark_key, gen.watermark_tag)
        marker = Watermarker(payload)
        # Render, watermark and encode overlap on separate threads (each stage releases the GIL).
        rendered = threaded(generator.frames(prepared, inputs.audio), name="provatar-render")
        frames: Iterator[np.ndarray] = threaded((marker.embed(f) for f in rendered), name="provatar-watermark")
        stages += [frames, rendered]
        encode_mp4(
            frames,
            inputs.audio,
            unsigned,
            fps=rt.settings.fps,
            crf=rt.settings.video_crf,
            on_frame=on_frame,
        )

        # 5. sign C2PA
        with Signer.from_files(
            rt.settings.cert_chain_path, rt.settings.signing_key_path, tsa_url=rt.settings.timestamp_authority_url
        ) as signer:
            sign_mp4(
                unsigned,
                signed,
                signer=signer,
                manifest=ManifestSpec(
                    title=out.name,
                    generation_id=gen.id,
                    policy_decision_id=decision.decision_id,
                    consent_record_id=consent_id,
                    policy_version=decision.policy_version,
                    watermark_algorithm=WATERMARK_ALGORITHM,
                    watermark_payload_hex=payload.to_hex(),
                    software_version=VERSION,
                    photo_path=Path(gen.photo_path),
                    audio_path=Path(gen.audio_path),
                    extra={
                        "policy_hash": decision.policy_hash,
                        "policy_decision": "allow",
                        # Whether a human approved a borderline likeness for this photo, and who.
                        "human_review": consent_ops.human_review_summary(facts),
                    },
                ),
            )
        report = read_provenance(signed, trust_anchors_pem=rt.trust_anchors_pem())
        output_sha256 = sha256_file(signed)
        try:
            os.replace(signed, out)
        except OSError as exc:
            raise OutputNotWritable(f"cannot write the output {out}: {exc.strerror or exc}") from exc

        # 6. audit
        event = rt.audit.append(
            action="generation.completed",
            actor=actor,
            subject=gen.subject_id,
            outcome="ok",
            request_id=gen.request_id,
            details={
                "generation_id": gen.id,
                "purpose": gen.purpose,
                "client_id": gen.client_id,
                "consent_record_id": consent_id,
                "policy_decision_id": decision.decision_id,
                "policy_version": decision.policy_version,
                "human_review": consent_ops.human_review_summary(facts),
                "watermark_tag": f"{gen.watermark_tag:08x}",
                "frames": total,
                "duration_s": round(inputs.audio.duration_s, 3),
                "photo_sha256": sha256_file(Path(gen.photo_path)),
                "audio_sha256": sha256_file(Path(gen.audio_path)),
                # The types the bytes have (and the C2PA ingredients carry), whatever the file names said.
                "photo_type": inputs.photo_type.mime if inputs.photo_type else None,
                "audio_type": inputs.audio_type.mime if inputs.audio_type else None,
                "output_sha256": output_sha256,
                "c2pa_state": report.state,
                "warnings": prepared.warnings,
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
        if progress:
            progress(1.0)
        done = job_state.move(
            rt,
            gen.id,
            JobStatus.succeeded,
            progress=1.0,
            manifest_json=report.manifest_json,
            audit_seq=event.seq,
        )
        assert done is not None  # only this runner moves a running job on
        return done
    except job_state.JobCancelled:
        rt.audit.append(
            action="generation.cancelled",
            actor=actor,
            subject=gen.subject_id,
            outcome="ok",
            request_id=gen.request_id,
            details={"generation_id": gen.id, "while": "running"},
        )
        cancelled = job_state.move(rt, gen.id, JobStatus.cancelled, **job_state.CANCELLED_FIELDS)
        assert cancelled is not None
        return cancelled
    except BaseException as exc:
        _record_failure(rt, gen, exc, actor=actor)
        raise
    finally:
        for stage in stages:  # stop the render/watermark threads at once if encoding failed
            stage.close()
        _unlink_quietly(unsigned)
        _unlink_quietly(signed)


def _record_failure(rt: Runtime, gen: Generation, exc: BaseException, *, actor: str) -> None:
    """End a running job visibly (status, audit entry, log) whatever else is broken: if the audit log cannot be
    written (database down, disk full) the job is still moved to its final status, and the reverse."""
    problem = describe(exc)
    denied = isinstance(exc, Denied)
    if not denied:  # denials were audited as policy decisions already
        # Bad input is the client's mistake (the job says why); anything else is ours to investigate.
        bug = problem.http_status >= 500
        log.log(
            logging.WARNING if bug else logging.INFO,
            "generation %s failed: %s: %s",
            gen.id,
            problem.code,
            problem.message,
            exc_info=exc if bug else None,
        )
        try:
            rt.audit.append(
                action="generation.failed",
                actor=actor,
                subject=gen.subject_id,
                outcome="error",
                request_id=gen.request_id,
                details={"generation_id": gen.id, "code": problem.code, "message": problem.message},
            )
        except Exception:
            log.error("could not audit the failure of generation %s", gen.id, exc_info=True)
    try:
        job_state.move(
            rt,
            gen.id,
            JobStatus.denied if denied else JobStatus.failed,
            error_code=problem.code,
            error_message=problem.message,
        )
    except Exception:
        log.error("could not mark generation %s as failed", gen.id, exc_info=True)


def update_generation(rt: Runtime, generation_id: str, *, attempts_inc: bool = False, **fields: Any) -> Generation:
    with rt.session() as session:
        gen = session.get(Generation, generation_id)
        if gen is None:
            raise KeyError(generation_id)
        for k, v in fields.items():
            setattr(gen, k, v)
        if attempts_inc:
            gen.attempts += 1
        session.add(gen)
        session.commit()
        session.refresh(gen)
        return gen
