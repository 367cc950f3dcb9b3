"""The generation pipeline, in the order a request flows through it:

    auth (done by the caller: API dependency or CLI operator)
      -> policy: consent, identity, limits         check_generation_policy()   service/policy_check.py
      -> generate frames                            TalkingFaceGenerator        service/job_generator.py
      -> watermark every frame                      FrameMarker, Watermarker    service/marking.py
      -> encode MP4 (H.264 + AAC)                   encode_mp4()
      -> sign C2PA                                  sign_output()               service/output_signing.py
      -> audit                                      job_state.move_audited()

`run_generation` is that whole flow for one persisted Generation row; nothing else in the service generates video.
The steps around it have their own modules: inputs typed and decoded (media_inputs), seconds per stage
(stage_clock), the run's temp files (run_files), a failed run's retry or record (run_failures).
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError

from generation.concurrency import threaded
from generation.framing import Framing
from generation.media import encode_mp4
from safeguards.watermark import TAG_BITS, Watermarker, WatermarkPayload
from service import job_state, leases
from service.fingerprints import keyed_fingerprint
from service.identity_reviews import human_review_summary
from service.job_generator import job_framing, job_generator
from service.marking import FrameMarker
from service.media_inputs import sha256_file, validate_inputs
from service.models import Generation, JobStatus
from service.output_signing import sign_output
from service.policy_check import check_generation_policy
from service.run_failures import is_transient, record_failure, requeue_transient
from service.run_files import RunFiles
from service.runtime import Runtime
from service.stage_clock import StageClock
from service.storage import OUTPUTS_PREFIX
from service.structured_logs import bind_job, unbind_job

__all__ = ["create_generation", "generate_file", "run_claimed", "run_generation", "update_generation"]

ProgressFn = Callable[[float], None]
log = logging.getLogger("provatar.pipeline")


def new_generation_id() -> str:
    return "gen_" + secrets.token_hex(8)


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
    files = RunFiles.for_run(rt, out, gen.id)  # temp names only: the output is replaced by a verified video or kept
    stages: list[Generator[np.ndarray, None, None]] = []
    t0 = time.perf_counter()
    lap = StageClock()  # seconds per stage, audited with the result (the job metrics read them from there)
    try:
        out.check_writable()
        photo_path = rt.storage.local_input(gen.photo_path, files.fetched)
        audio_path = rt.storage.local_input(gen.audio_path, files.fetched)
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
            files.unsigned,
            fps=rt.settings.fps,
            crf=rt.settings.video_crf,
            on_frame=on_frame,
        )
        lap("render")  # generate + watermark + encode: they overlap on three threads

        # 5. sign C2PA
        report = sign_output(
            rt,
            unsigned=files.unsigned,
            signed=files.signed,
            title=out.name,
            generation_id=gen.id,
            decision=decision,
            facts=facts,
            payload=payload,
            photo_path=photo_path,
            audio_path=audio_path,
        )
        output_sha256 = sha256_file(files.signed)
        lap("sign")
        # Uploaded (S3) or left in place (local) now; made the output inside the completion's transaction below,
        # so only the run that records the completion replaces it (a rename, or a copy within the bucket).
        staged = files.staged = out.stage(files.signed)
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
                    "human_review": human_review_summary(facts),
                    "watermark_tag": f"{gen.watermark_tag:08x}",
                    "frames": total,
                    "framing": framing.mode,
                    "frame_size": "{}x{}".format(*prepared.output_size),
                    "duration_s": round(inputs.audio.duration_s, 3),
                    # Keyed fingerprints, not plain hashes, of the inputs (see policy_check._audited_facts).
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
        if is_transient(exc) and requeue_transient(rt, gen, exc, owned=owned):
            raise
        record_failure(rt, gen, exc, actor=actor, owned=owned)
        raise
    finally:
        for stage in stages:  # stop the render/watermark threads at once if encoding failed
            stage.close()
        files.remove()
        unbind_job(log_ids)


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
