"""End-to-end generator speed on the shipped example photo + audio, split by stage.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_generation.py [--seconds S] [--threads N]
Prints frames/s at 512x512 and the ratio to 25 fps real time per stage:
face analysis (once), motion, render, encode.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from generation import (  # noqa: E402
    GenerationConfig,
    TalkingFaceGenerator,
    encode_mp4,
    load_audio,
    load_image,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length to generate (default 4 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1 = one core)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    photo = load_image(ROOT / "examples" / "astronaut_eileen_collins.png", max_pixels=50_000_000)
    audio = load_audio(ROOT / "examples" / "ljspeech_LJ001-0001.wav").head(args.seconds)
    gen = TalkingFaceGenerator(GenerationConfig(size=512, fps=25, seed=0, device=args.device))

    t0 = time.perf_counter()
    prepared = gen.prepare(photo)
    t_face = time.perf_counter() - t0
    t0 = time.perf_counter()
    motion = gen.motion(audio)
    t_motion = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = list(gen.render_motion(prepared, motion))
    t_render = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        encode_mp4(frames, audio, Path(tmp) / "bench.mp4", fps=25)
        t_encode = time.perf_counter() - t0
    n = len(frames)
    total = t_motion + t_render + t_encode
    print(f"device={args.device} threads={args.threads} frames={n} (512x512, {audio.duration_s:.2f} s audio)")
    print(f"face analysis (once): {t_face * 1000:8.1f} ms")
    for name, secs in (("motion", t_motion), ("render", t_render), ("encode", t_encode)):
        print(f"{name:>20}: {secs * 1000 / n:8.2f} ms/frame  {n / secs:8.1f} fps")
    print(
        f"end to end (excl. face analysis): {n / total:.1f} fps = {n / total / 25:.2f}x real time at 25 fps"
    )
    print(
        f"end to end (incl. face analysis): {n / (total + t_face):.1f} fps = {n / (total + t_face) / 25:.2f}x"
    )


if __name__ == "__main__":
    main()
