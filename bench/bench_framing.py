"""End-to-end frame rate by framing: render + watermark + H.264 encode, arranged as the pipeline runs them.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_framing.py [--seconds 4] [--runs 2] [--preset veryfast]

Two cases on the shipped example (a 512x512 photo; for the full frame it is widened to 16:9 with a soft fill of its
own edge colours and enlarged to 1920x1080):
- crop: 512x512 output (the default framing);
- full: 1920x1080 output, the head rendered at 512 and composited into the still picture.
Each is timed as `service.pipeline.run_generation` runs these stages: render, watermark (FrameMarker) and encode
overlapped on three threads, one torch thread. Prints the best of --runs (wall-clock fps), the CPU time per frame
of the overlapped run (all threads, x264's included) and what two idle cores would sustain at that cost, the serial
per-stage CPU cost, and the load average: other processes on a shared machine slow the wall-clock numbers, far less
the CPU times.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation import GenerationConfig, TalkingFaceGenerator, encode_mp4, load_audio, load_image  # noqa: E402
from generation.concurrency import threaded  # noqa: E402
from generation.generator import PreparedFace  # noqa: E402
from generation.media import AudioTrack  # noqa: E402
from safeguards.watermark import Watermarker, WatermarkPayload  # noqa: E402
from service.marking import FrameMarker  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"


def widened(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """``photo`` padded left and right to width:height with its edge colours, blurred (no second face, no streaks),
    then resized to width x height."""
    h, w = photo.shape[:2]
    target_w = int(round(h * width / height))
    pad = max(0, target_w - w)
    left = pad // 2
    padded = cv2.copyMakeBorder(photo, 0, 0, left, pad - left, cv2.BORDER_REPLICATE)
    blurred = cv2.blur(padded, (61, 61))
    padded[:, :left] = blurred[:, :left]
    padded[:, left + w :] = blurred[:, left + w :]
    return cv2.resize(padded, (width, height), interpolation=cv2.INTER_CUBIC)


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread, x264's own included)."""
    return time.perf_counter(), time.process_time()


def run_once(gen: TalkingFaceGenerator, prepared: PreparedFace, audio: AudioTrack, preset: str | None
             ) -> tuple[float, float]:  # fmt: skip
    """(wall, CPU) seconds for render -> mark -> encode of the whole clip, stages overlapped as in the pipeline."""
    marker = FrameMarker(prepared, Watermarker(WatermarkPayload.for_generation(b"b" * 32, 7)))
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = _clock()
        rendered = threaded(gen.crops(prepared, audio), name="bench-render")
        frames = threaded(marker.mark_all(rendered), name="bench-watermark")
        kwargs = {} if preset is None else {"preset": preset}
        encode_mp4(frames, audio, Path(tmp) / "bench.mp4", fps=25, **kwargs)
        return time.perf_counter() - wall, time.process_time() - cpu


def per_stage(gen: TalkingFaceGenerator, prepared: PreparedFace, audio: AudioTrack, preset: str | None
              ) -> dict[str, float]:  # fmt: skip
    """CPU milliseconds per frame of each stage run alone, one after another (CPU time: what a busy machine's
    other processes do not inflate the way they inflate wall time)."""
    motion = gen.motion(audio)
    cpu = time.process_time()
    crops = list(gen.render_motion(prepared, motion))
    out = {"render": time.process_time() - cpu}
    marker = FrameMarker(prepared, Watermarker(WatermarkPayload.for_generation(b"b" * 32, 7)))
    scene = prepared.scene
    if scene is not None:
        cpu = time.process_time()
        for crop in crops:
            scene.compose_window(crop)
        out["composite"] = time.process_time() - cpu
    cpu = time.process_time()
    for crop in crops:  # each frame dropped at once, as the pipeline's bounded queues do (kept, 100 fresh 6 MB
        marker.mark(crop)  # frames would add their page faults: 8 ms a frame here)
    out["watermark"] = time.process_time() - cpu - out.get("composite", 0.0)  # mark() composites too
    frames = [marker.mark(c) for c in crops]  # for the encoder, untimed
    with tempfile.TemporaryDirectory() as tmp:
        cpu = time.process_time()
        kwargs = {} if preset is None else {"preset": preset}
        encode_mp4(iter(frames), audio, Path(tmp) / "bench.mp4", fps=25, **kwargs)
        out["encode"] = time.process_time() - cpu
    return {k: 1000 * v / len(crops) for k, v in out.items()}


def ablation(prepared: PreparedFace, repeats: int = 20) -> None:
    """The two 1080p costs the full-frame path avoids, CPU ms per frame: marking the whole frame vs only the
    window that changes (same pixels), and PyAV's swscale RGB -> yuv420p conversion vs OpenCV's."""
    import av

    scene = prepared.scene
    assert scene is not None
    marker = Watermarker(WatermarkPayload.for_generation(b"b" * 32, 7))
    frame = scene.compose(prepared.face.image)
    y0, y1, x0, x1 = scene.window

    def cpu_ms(fn: Callable[[], object]) -> float:
        fn()
        cpu = time.process_time()
        for _ in range(repeats):
            fn()
        return 1000 * (time.process_time() - cpu) / repeats

    whole = cpu_ms(lambda: marker.embed(frame))
    window = cpu_ms(lambda: marker.embed_window(frame[y0:y1, x0:x1], (y0, x0), frame.shape[:2]))
    swscale = cpu_ms(lambda: av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p"))
    opencv = cpu_ms(lambda: av.VideoFrame.from_ndarray(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), format="yuv420p"))
    print(
        f"  1920x1080 ablation (CPU ms/frame): watermark whole frame {whole:.1f} vs window "
        f"{x1 - x0}x{y1 - y0} {window:.1f}; RGB->yuv420p swscale {swscale:.1f} vs OpenCV {opencv:.1f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length (default 4 s = 100 frames)")
    ap.add_argument("--runs", type=int, default=2, help="best of N overlapped runs per case")
    ap.add_argument("--preset", default=None, help="x264 preset (default: encode_mp4's choice for the size)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the service's default is 1)")
    ap.add_argument("--ablation", action="store_true", help="also time what the 1080p path avoids")
    ap.add_argument("--full-size", type=int, default=512, help="--size of the full-frame case (head render cap)")
    ap.add_argument("--cases", default="crop,full", help="which cases to run (default: crop,full)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    photo = load_image(PHOTO, max_pixels=50_000_000)
    audio = load_audio(AUDIO).head(args.seconds)
    cases: list[tuple[str, Callable[[], np.ndarray], str]] = [
        ("crop", lambda: photo, "crop 512x512"),
        ("full", lambda: widened(photo, 1920, 1080), f"full 1920x1080 (--size {args.full_size})"),
    ]
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    for framing, make_photo, label in cases:
        if framing not in args.cases.split(","):
            continue
        size = args.full_size if framing == "full" else 512
        gen = TalkingFaceGenerator(GenerationConfig(size=size, fps=25, seed=0, framing=framing))  # type: ignore[arg-type]
        t0 = time.perf_counter()
        prepared = gen.prepare(make_photo())
        t_prepare = time.perf_counter() - t0
        n = gen.frame_count(audio)
        width, height = prepared.output_size
        runs = [run_once(gen, prepared, audio, args.preset) for _ in range(args.runs)]
        wall, cpu = min(runs)
        stages = per_stage(gen, prepared, audio, args.preset)
        split = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        # What two idle cores would sustain: all the CPU work spread over both, but no faster than the slowest
        # stage on its own core (the render stage is one torch thread).
        capacity = min(2000.0 / (1000 * cpu / n), 1000.0 / max(stages["render"], 1e-9))
        print(
            f"{label}: {n / wall:5.1f} fps measured ({width}x{height}, {n} frames, best of {args.runs}; prepare "
            f"{t_prepare:.2f} s once); CPU {1000 * cpu / n:.1f} ms/frame overlapped -> {capacity:.1f} fps on 2 idle "
            f"cores; serial CPU ms/frame: {split}"
        )
        if args.ablation and prepared.scene is not None:
            ablation(prepared)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
