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
import secrets
import shutil
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
from generation.framing import Framing
from generation.media import AudioTrack, MediaType, encode_mp4, load_audio, load_image, sniff_media_type
from policies import PolicyDecision, evaluate_generation
from policies.facts import GenerationFacts
from safeguards.gate import assess_generation_request
from safeguards.identity import Band, IdentityThresholds
from safeguards.provenance import ManifestSpec, Signer, read_provenance, sign_mp4
from safeguards.watermark import TAG_BITS, WATERMARK_ALGORITHM, Watermarker, WatermarkPayload
from service import identity_reviews, job_state, leases
from service.errors import Denied, describe, unavailable_code
from service.fingerprints import keyed_fingerprint
from service.marking import FrameMarker
from service.models import Generation, JobStatus
from service.runtime import Runtime
from service.settings import Settings
from service.storage import OUTPUTS_PREFIX, StagedOutput, check_output_path
from service.structured_logs import bind_job, unbind_job

__all__ = ["check_output_path", "generate_file", "run_generation"]  # check_output_path: the CLI's pre-check

ProgressFn = Callable[[float], None]
VERSION = "0.1.0"
log = logging.getLogger("provatar.pipeline")
# Names of the files a run stages beside its output (hidden, so a half-written video never looks like a result):
# `.{name}.{token}.unsigned.part.mp4`, `.{name}.{token}.signed.part.mp4`, and the encoder's own `.{...}.part`.
# `service.sweep` removes stale ones a killed process left behind.
PART_GLOBS = (".*.part", ".*.part.mp4")


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file this run created; a failure to clean up must never hide the run's own error."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove the temp file %s", path, exc_info=True)


class StageClock:
    """Wall-clock seconds of consecutive stages: each call closes the stage named, which began at the last call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now


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


def identity_thresholds(settings: Settings) -> IdentityThresholds:
    """The subject and block-list bands from the settings (a band whose ends are swapped is a startup error)."""
    return IdentityThresholds(
        subject=Band(settings.subject_match_threshold, settings.subject_review_threshold),
        block=Band(settings.block_match_threshold, settings.block_review_threshold),
        poor_photo_margin=settings.poor_photo_margin,
    )



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
            thresholds=identity_thresholds(rt.settings),
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
        details={"generation_id": generation_id, "decision": decision.to_dict(), "facts": _audited_facts(rt, facts)},
    )
    if not decision.allowed:
        reviews = identity_reviews.queue_identity_reviews(
            rt, facts=facts, decision=decision, actor=actor, request_id=request_id, generation_id=generation_id
        )
        shown = decision.to_dict() | ({"review_ids": [r.id for r in reviews]} if reviews else {})
        raise Denied(decision.reasons, decision.messages, shown)
    identity_reviews.record_review_use(rt, facts=facts, actor=actor, request_id=request_id, generation_id=generation_id)
    return decision, facts


def _audited_facts(rt: Runtime, facts: GenerationFacts) -> dict[str, Any]:
    """The facts for the audit log, the photo named by its keyed fingerprint: a plain SHA-256 in an append-only log
    would outlive the subject's erasure (service/fingerprints.py)."""
    audited = facts.to_dict()
    digest = audited.pop("photo_sha256", None)
    audited["photo_fingerprint"] = keyed_fingerprint(rt, digest) if digest else None
    return audited


def job_framing(rt: Runtime, params: dict[str, Any] | None) -> Framing:
    """A job's framing (stored as `{"mode", "size"}`; absent = the default crop at the configured output size).
    Raises InvalidControls for a bad value."""
    params = params or {}
    return Framing.from_values(params.get("mode"), params.get("size"), default_size=rt.settings.output_size)


def job_generator(rt: Runtime, controls: dict[str, Any], framing: Framing | None = None) -> TalkingFaceGenerator:
    """The runtime's generator with this job's controls (gaze, distance, emotion, intensity, seed, lip-sync) and
    framing (crop or full frame, crop size)."""
    config = replace(rt.generator.config, controls=Controls.from_mapping(controls))
    if framing is not None:
        config = replace(config, framing=framing.mode, size=framing.size)
    return TalkingFaceGenerator(config)


def create_generation(
    rt: Runtime,
    *,
    subject_id: str,
    purpose: str,
    client_id: str,
    photo_path: Path | str,
    audio_path: Path | str,
    output_path: Path | None,
    request_id: str,
    params: dict[str, Any] | None = None,
    reserved_for: str | None = None,
) -> Generation:
    """Persist a queued generation with a fresh, unique 32-bit watermark tag. Inputs are local paths or storage
    locations (`s3://...`, service/storage.py); without `output_path` the video goes to the runtime's storage.
    `reserved_for` (a lease owner) keeps it for the process that will run it itself: no worker or server claims it
    (leases.claim)."""
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
            output_path=str(output_path) if output_path else rt.storage.location(f"{OUTPUTS_PREFIX}{gen_id}.mp4"),
            params=params or {},
            lease_owner=reserved_for,
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
    framing: Framing | None = None,
    progress: ProgressFn | None = None,
) -> Generation:
    """Generate synchronously (CLI, demo, benchmarks): persist the job, then run the whole chain in this thread.

    The job stops (cancelled) when a cancel is requested for it from elsewhere, e.g. the subject's consent is
    revoked while it renders."""
    from service.jobs import CancelCheck  # the worker's throttled cancel check (service.jobs imports this module)

    owner = leases.new_owner()
    gen = create_generation(
        rt,
        reserved_for=owner,
        subject_id=subject_id,
        purpose=purpose,
        client_id=client_id,
        photo_path=photo_path,
        audio_path=audio_path,
        output_path=output_path,
        request_id=uuid.uuid4().hex,
        # Owned by this process (issue 14): if it dies, the reaper fails the job; no server finishes it into -o.
        params={
            "controls": controls or {},
            "in_process": True,
            **({"framing": framing.to_params()} if framing else {}),
        },
    )
    return run_generation(rt, gen.id, actor=actor, progress=progress, should_stop=CancelCheck(rt, gen.id), owner=owner)


def run_generation(
    rt: Runtime,
    generation_id: str,
    *,
    actor: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    owner: str | None = None,
) -> Generation:
    """Claim one queued generation and run it through the whole chain. Never leaves a partial output file behind.

    The job is held under a lease (service/leases.py), renewed while it renders; a job that is not queued (finished,
    cancelled, or running under another runner's live lease) is returned unchanged, so a redelivered task is a
    no-op; `owner` claims a job reserved for it (create_generation's `reserved_for`). `actor` defaults to the
    client that asked for the generation (the worker acts on its behalf). `should_stop` is asked at every frame
    boundary; True ends the job as `cancelled`. Raises LeaseLost when the lease was lost mid-run (the job is someone
    else's now): nothing is recorded for this run then.
    """
    claimed = leases.claim(rt, generation_id, owner=owner)
    if claimed is None:
        return update_generation(rt, generation_id)
    return run_claimed(rt, *claimed, actor=actor, progress=progress, should_stop=should_stop)


def run_claimed(
    rt: Runtime,
    lease: leases.Lease,
    gen: Generation,
    *,
    actor: str | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generation:
    """`run_generation` for a job this runner has just claimed (leases.claim): renews the lease while it runs."""
    with leases.Heartbeat(rt, lease) as heartbeat:
        actor = actor or f"client:{gen.client_id}"
        return _run_leased(rt, gen, heartbeat, actor=actor, progress=progress, should_stop=should_stop)


def _run_leased(
    rt: Runtime,
    gen: Generation,
    heartbeat: leases.Heartbeat,
    *,
    actor: str,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
) -> Generation:
    """auth (done) -> policy -> generate -> watermark -> encode -> sign -> audit, for a job this runner holds.
    Every move that ends it is conditional on still holding the lease and is audited in the same transaction."""
    lease = heartbeat.lease
    owned = [leases.held(lease.owner)]
    log_ids = bind_job(gen.id, gen.request_id)  # every log line of this run names the job (structured_logs.py)

    def check_stop() -> None:
        if heartbeat.lost.is_set():  # taken over, or this process should stop: record nothing, leave it to others
            raise job_state.LeaseLost(gen.id)
        if should_stop is not None and should_stop():
            raise job_state.JobCancelled(gen.id)

    def on_frame(i: int) -> None:
        check_stop()
        if progress:
            progress(0.95 * (i + 1) / total)

    location = gen.output_path or rt.storage.location(f"{OUTPUTS_PREFIX}{gen.id}.mp4")
    out = rt.storage.output_target(location, work_dir=rt.settings.work_dir)
    # Everything is written under temp names in the staging dir (beside a local output); the output itself is only
    # ever replaced by a finished, signed, verified video, and never deleted: one already there survives any failure.
    token = secrets.token_hex(4)
    unsigned = out.staging_dir / f".{out.name}.{token}.unsigned.part.mp4"
    signed = out.staging_dir / f".{out.name}.{token}.signed.part.mp4"
    # Inputs kept in object storage (uploads on another machine) are fetched here for the run, and deleted after it.
    fetched = rt.settings.work_dir / f".inputs.{gen.id}.{token}.part"
    stages: list[Generator[np.ndarray, None, None]] = []
    staged: StagedOutput | None = None
    t0 = time.perf_counter()
    lap = StageClock()  # seconds per stage, audited with the result (the job metrics read them from there)
    try:
        out.check_writable()
        photo_path = rt.storage.local_input(gen.photo_path, fetched)
        audio_path = rt.storage.local_input(gen.audio_path, fetched)
        # 1. policy: consent, identity, limits (checked again here: consent may be revoked while a job is queued)
        inputs = validate_inputs(rt, photo_path, audio_path)
        lap("inputs")
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
        lap("policy")

        # 2. generate, 3. watermark every frame, 4. encode
        check_stop()
        framing = job_framing(rt, gen.params.get("framing"))
        generator = job_generator(rt, gen.params.get("controls") or {}, framing)
        prepared = generator.prepare(inputs.photo)
        if prepared.warnings:  # e.g. a mouth under a hand: the video is made, the result says what was not animated
            gen = update_generation(rt, gen.id, params={**gen.params, "warnings": prepared.warnings})
        total = generator.frame_count(inputs.audio)
        payload = WatermarkPayload.for_generation(rt.watermark_key, gen.watermark_tag)
        marker = FrameMarker(prepared, Watermarker(payload))
        # Render, watermark and encode overlap on separate threads (each stage releases the GIL). The render stage
        # yields head crops; the watermark stage turns them into marked output frames (full framing: composited).
        rendered = threaded(generator.crops(prepared, inputs.audio), name="provatar-render")
        frames: Iterator[np.ndarray] = threaded(marker.mark_all(rendered), name="provatar-watermark")
        stages += [frames, rendered]
        encode_mp4(
            frames,
            inputs.audio,
            unsigned,
            fps=rt.settings.fps,
            crf=rt.settings.video_crf,
            on_frame=on_frame,
        )
        lap("render")  # generate + watermark + encode: they overlap on three threads

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
                    photo_path=photo_path,
                    audio_path=audio_path,
                    extra={
                        "policy_hash": decision.policy_hash,
                        "policy_decision": "allow",
                        # Whether a human approved a borderline likeness for this photo, and who.
                        "human_review": identity_reviews.human_review_summary(facts),
                    },
                ),
            )
        report = read_provenance(signed, trust_anchors_pem=rt.trust_anchors_pem())
        output_sha256 = sha256_file(signed)
        lap("sign")
        # Uploaded (S3) or left in place (local) now; made the output inside the completion's transaction below,
        # so only the run that records the completion replaces it (a rename, or a copy within the bucket).
        staged = out.stage(signed)
        lap("publish")

        # 6. audit: the entry, the move to succeeded and the output's publication commit together, once
        if progress:
            progress(1.0)
        done = job_state.move_audited(
            rt,
            gen.id,
            JobStatus.succeeded,
            conditions=owned,
            publish=staged.commit,
            audit={
                "action": "generation.completed",
                "actor": actor,
                "subject": gen.subject_id,
                "outcome": "ok",
                "request_id": gen.request_id,
                "details": {
                    "generation_id": gen.id,
                    "purpose": gen.purpose,
                    "client_id": gen.client_id,
                    "consent_record_id": consent_id,
                    "policy_decision_id": decision.decision_id,
                    "policy_version": decision.policy_version,
                    "human_review": identity_reviews.human_review_summary(facts),
                    "watermark_tag": f"{gen.watermark_tag:08x}",
                    "frames": total,
                    "framing": framing.mode,
                    "frame_size": "{}x{}".format(*prepared.output_size),
                    "duration_s": round(inputs.audio.duration_s, 3),
                    # Keyed fingerprints, not plain hashes, of the inputs (see _audited_facts).
                    "photo_fingerprint": keyed_fingerprint(rt, sha256_file(photo_path)),
                    "audio_fingerprint": keyed_fingerprint(rt, sha256_file(audio_path)),
                    # The types the bytes have (and the C2PA ingredients carry), whatever the file names said.
                    "photo_type": inputs.photo_type.mime if inputs.photo_type else None,
                    "audio_type": inputs.audio_type.mime if inputs.audio_type else None,
                    "output_sha256": output_sha256,
                    "c2pa_state": report.state,
                    "warnings": prepared.warnings,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "stage_seconds": lap.seconds,
                    "attempt": gen.attempts,
                },
            },
            progress=1.0,
            manifest_json=report.manifest_json,
        )
        if done is None:
            raise job_state.LeaseLost(gen.id)
        return done[0]
    except job_state.JobCancelled:
        cancelled = job_state.move_audited(
            rt,
            gen.id,
            JobStatus.cancelled,
            conditions=owned,
            audit={
                "action": "generation.cancelled",
                "actor": actor,
                "subject": gen.subject_id,
                "outcome": "ok",
                "request_id": gen.request_id,
                "details": {"generation_id": gen.id, "while": "running"},
            },
            **job_state.CANCELLED_FIELDS,
        )
        if cancelled is None:  # the lease lapsed meanwhile: the job is someone else's now
            raise job_state.LeaseLost(gen.id) from None
        return cancelled[0]
    except job_state.LeaseLost:
        log.warning("generation %s: lease %s lost; this run's work is discarded", gen.id, lease.owner)
        raise
    except BaseException as exc:
        if is_transient(exc) and _requeue_transient(rt, gen, exc, owned=owned):
            raise
        _record_failure(rt, gen, exc, actor=actor, owned=owned)
        raise
    finally:
        for stage in stages:  # stop the render/watermark threads at once if encoding failed
            stage.close()
        _unlink_quietly(unsigned)
        _unlink_quietly(signed)
        if staged is not None:
            staged.discard()  # an uploaded copy that never became the output (a no-op once committed)
        shutil.rmtree(fetched, ignore_errors=True)
        unbind_job(log_ids)


def is_transient(exc: BaseException) -> bool:
    """The database was unreachable: the same job may well succeed in a moment (unlike bad input or a denial)."""
    return unavailable_code(exc) == "database_unavailable"


def _requeue_transient(rt: Runtime, gen: Generation, exc: BaseException, *, owned: list[Any]) -> bool:
    """Put a job that hit a transient failure back in the queue for a retry, while it has attempts left. False when
    it has none (the caller fails it) ; a requeue that itself fails leaves the lease to expire (the reaper retries)."""
    if gen.attempts >= rt.settings.job_max_attempts:
        return False
    problem = describe(exc)
    log.warning("generation %s: %s (attempt %d); requeued for a retry", gen.id, problem.message, gen.attempts)
    try:
        job_state.move_audited(
            rt,
            gen.id,
            JobStatus.queued,
            conditions=owned,
            audit={
                "action": "generation.requeued",
                "actor": "service:worker",
                "subject": gen.subject_id,
                "outcome": "error",
                "request_id": gen.request_id,
                "details": {"generation_id": gen.id, "reason": problem.code, "attempts": gen.attempts},
            },
        )
    except Exception:
        log.warning("could not requeue generation %s; its lease will expire", gen.id, exc_info=True)
    return True


def _record_failure(rt: Runtime, gen: Generation, exc: BaseException, *, actor: str, owned: list[Any]) -> None:
    """End a running job visibly (status, audit entry, log) whatever else is broken: if the audit log cannot be
    written (database down, disk full) the job is still moved to its final status. Only while this runner holds
    the lease: a job it lost is someone else's."""
    problem = describe(exc)
    denied = isinstance(exc, Denied)
    to = JobStatus.denied if denied else JobStatus.failed
    fields = {"error_code": problem.code, "error_message": problem.message}
    if denied:  # denials were audited as policy decisions already
        _move_quietly(rt, gen.id, to, owned, fields)
        return
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
        job_state.move_audited(
            rt,
            gen.id,
            to,
            conditions=owned,
            audit={
                "action": "generation.failed",
                "actor": actor,
                "subject": gen.subject_id,
                "outcome": "error",
                "request_id": gen.request_id,
                "details": {"generation_id": gen.id, "code": problem.code, "message": problem.message},
            },
            **fields,
        )
    except Exception:
        log.error("could not audit the failure of generation %s", gen.id, exc_info=True)
        _move_quietly(rt, gen.id, to, owned, fields)


def _move_quietly(rt: Runtime, gen_id: str, to: JobStatus, owned: list[Any], fields: dict[str, Any]) -> None:
    try:
        job_state.move(rt, gen_id, to, conditions=owned, **fields)
    except Exception:
        log.error("could not mark generation %s as %s", gen_id, to.value, exc_info=True)


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
