"""End-to-end generation speed through the real pipeline (policy -> generate -> watermark -> encode -> C2PA -> audit).

Prints frames per second at 512x512 and the ratio to real time (25 fps), plus a per-stage split measured on the
same inputs, and the detection time of the result. Uses a throwaway installation and the shipped examples.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_e2e.py [--seconds 9.7] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation import encode_mp4, load_audio, load_image  # noqa: E402
from safeguards.provenance import ManifestSpec, Signer, sign_mp4  # noqa: E402
from safeguards.watermark import (  # noqa: E402
    WATERMARK_ALGORITHM,  # noqa: E402
    Watermarker,
    WatermarkPayload,
)
from service import consent_ops  # noqa: E402
from service.detect import run_detection  # noqa: E402
from service.media_inputs import validate_inputs  # noqa: E402
from service.pipeline import create_generation, run_generation  # noqa: E402
from service.policy_check import check_generation_policy  # noqa: E402
from service.runtime import Runtime, initialize  # noqa: E402
from service.settings import Settings  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None, help="cut the example audio (default: all 9.7 s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for rendering (PROVATAR_TORCH_THREADS)")
    ap.add_argument("--runs", type=int, default=2, help="take the best of N pipeline runs")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio_path = AUDIO
        if args.seconds:
            track = load_audio(AUDIO).head(args.seconds)
            audio_path = work / "cut.wav"
            with wave.open(str(audio_path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(track.sample_rate)
                w.writeframes((np.clip(track.samples, -1, 1) * 32767).astype("<i2").tobytes())
        settings = Settings(data_dir=work / "data", torch_threads=args.threads)
        initialize(settings)
        rt = Runtime(settings)
        subject, _ = consent_ops.enroll(
            rt,
            name="bench",
            photos=[PHOTO.read_bytes()],
            purposes=["bench"],
            clients=[],
            expires_days=1,
            evidence_sha256="0" * 64,
            actor="bench",
        )
        audio = load_audio(audio_path)
        n_frames = rt.generator.frame_count(audio)

        # Whole pipeline, best of N (the first run also pays model warm-up).
        walls = []
        for i in range(args.runs):
            gen = create_generation(
                rt,
                subject_id=subject.id,
                purpose="bench",
                client_id="bench",
                photo_path=PHOTO,
                audio_path=audio_path,
                output_path=work / f"out{i}.mp4",
                request_id=uuid.uuid4().hex,
            )
            t0 = time.perf_counter()
            run_generation(rt, gen.id, actor="bench")
            walls.append(time.perf_counter() - t0)
        wall = min(walls)

        # Per-stage split on the same inputs.
        photo = load_image(PHOTO, max_pixels=settings.max_image_pixels)
        t0 = time.perf_counter()
        prepared = rt.generator.prepare(photo)
        t_prepare = time.perf_counter() - t0
        t0 = time.perf_counter()
        frames = list(rt.generator.frames(prepared, audio))
        t_render = time.perf_counter() - t0
        marker = Watermarker(WatermarkPayload.for_generation(rt.watermark_key, 0x1234ABCD))
        t0 = time.perf_counter()
        marked = [marker.embed(f) for f in frames]
        t_mark = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode_mp4(iter(marked), audio, work / "split.mp4", fps=settings.fps, crf=settings.video_crf)
        t_encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        check_generation_policy(rt, inputs=validate_inputs(rt, PHOTO, audio_path), subject_id=subject.id,
                                client_id="bench", purpose="bench", actor="bench", request_id="bench")
        t_policy = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Signer.from_files(settings.cert_chain_path, settings.signing_key_path) as signer:
            sign_mp4(work / "split.mp4", work / "split-signed.mp4", signer=signer, manifest=ManifestSpec(
                title="bench", generation_id="gen_bench", policy_decision_id="d", consent_record_id="c",
                policy_version="v", watermark_algorithm=WATERMARK_ALGORITHM, watermark_payload_hex="00" * 8,
                software_version="bench", photo_path=PHOTO, audio_path=audio_path))
        t_sign = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = run_detection(rt, work / "out0.mp4", actor="bench", request_id="bench")
        t_detect = time.perf_counter() - t0
        rt.close()

    fps = n_frames / wall
    print(
        f"end-to-end pipeline, {n_frames} frames at 512x512 ({audio.duration_s:.1f} s of audio), "
        f"{torch.get_num_threads()} torch thread(s), best of {args.runs}: {wall:.2f} s"
    )
    print(f"  -> {fps:.1f} frames/s = {fps / settings.fps:.2f}x real time at {settings.fps} fps")
    print("stage split (same inputs):")
    print(f"  face analysis (once)   {t_prepare * 1000:7.0f} ms")
    print(f"  motion + render        {t_render / n_frames * 1000:7.1f} ms/frame  ({n_frames / t_render:6.1f} fps)")
    print(f"  watermark (dwtDctSvd)  {t_mark / n_frames * 1000:7.1f} ms/frame  ({n_frames / t_mark:6.1f} fps)")
    print(f"  H.264 + AAC encode     {t_encode / n_frames * 1000:7.1f} ms/frame  ({n_frames / t_encode:6.1f} fps)")
    print(f"  policy check           {t_policy * 1000:7.0f} ms (decode, faces, likeness, consent, Cedar, audit)")
    print(f"  C2PA signing           {t_sign * 1000:7.0f} ms")
    serial = t_prepare + t_render + t_mark + t_encode + t_policy + t_sign
    print(f"stages one after another would give {n_frames / serial:.1f} frames/s; overlapped: {fps:.1f} frames/s")
    print(f"detection of the output: {t_detect:.2f} s (verdict {report.verdict})")


if __name__ == "__main__":
    main()
