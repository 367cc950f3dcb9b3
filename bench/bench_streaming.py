"""Streaming latency (in process and through the real server) and long-audio memory.

1. First-frame latency in process: time from pushing the first 200 ms audio chunk into a warmed StreamingSession to
   the first frame watermarked and JPEG-encoded (what the WebSocket sends), p50/p95/max over N sessions.
1b. First-frame latency against the real server: `provatar serve` is started as a subprocess on a loopback port with
   a throwaway data dir (init, the example subject enrolled with consent through the API); N WebSocket sessions
   (`websockets` client) each send the config and photo, wait for "ready", then time from sending the first 200 ms
   PCM chunk to receiving the first frame; the rest of the clip follows in real time and every session must end
   with "done" and all its frames. p50/p95/max over the N sessions, plus the time from connecting to "ready".
2. Long audio: 5 minutes of speech (the example clip repeated with pauses) streamed in 200 ms chunks through the
   session, watermark and the H.264+AAC encoder; resident memory sampled every second must stay flat, and the output
   must have exactly ceil(duration * fps) frames with audio and video of equal length (no drift).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_streaming.py [--minutes 5] [--sessions 10]
        [--no-server] [--no-long]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from generation import (  # noqa: E402
    GenerationConfig,
    TalkingFaceGenerator,
    encode_mp4,
    load_audio,
    load_image,
    probe_video,
)
from generation.concurrency import threaded  # noqa: E402
from generation.media import AudioTrack  # noqa: E402
from generation.streaming import StreamingSession  # noqa: E402
from safeguards.watermark import Watermarker, WatermarkPayload  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"
CHUNK_S = 0.2


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def first_frame_latency(gen: TalkingFaceGenerator, prepared: object, audio: AudioTrack, sessions: int) -> list[float]:
    marker = Watermarker(WatermarkPayload.for_generation(b"k" * 32, 0x0BADCAFE))
    chunk = audio.samples[: int(CHUNK_S * audio.sample_rate)]
    blank = np.zeros((gen.config.size, gen.config.size, 3), np.uint8)
    cv2.imencode(".jpg", marker.embed(blank))  # the service warms these when a stream opens, before "ready"
    out = []
    for _ in range(sessions):
        session = StreamingSession(gen, prepared, sample_rate=audio.sample_rate)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        frames = session.push(chunk)
        marked = marker.embed(frames[0])
        cv2.imencode(".jpg", cv2.cvtColor(marked, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(time.perf_counter() - t0)
    return out


def percentiles(values: list[float]) -> str:
    """p50 / p95 (nearest rank) / max in milliseconds."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms")


@contextmanager
def real_server(tmp: Path) -> Iterator[tuple[str, tuple[str, str]]]:
    """`provatar serve` on a free loopback port over a fresh installation; yields (base URL, admin credentials)."""
    import httpx

    env = {**os.environ, "PROVATAR_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    cli = [sys.executable, "-m", "service.cli"]
    init = subprocess.run([*cli, "init"], env=env, capture_output=True, text=True, check=True)
    creds = {k.strip(): v.strip() for k, v in (ln.split(":", 1) for ln in init.stdout.splitlines() if "client_" in ln)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"provatar serve exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("provatar serve did not come up in 300 s")
            time.sleep(0.5)
        yield base, (creds["client_id"], creds["client_secret"])
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


async def server_session(url: str, token: str, config: dict[str, object], photo: bytes, pcm: bytes,
                         rate: int) -> tuple[float, float, int]:
    """One stream in real time; returns (connect -> ready, first chunk -> first frame, frames received)."""
    from websockets.asyncio.client import connect

    step = int(CHUNK_S * rate) * 2  # s16le
    t_connect = time.perf_counter()
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, proxy=None,
                       compression=None) as ws:
        await ws.send(json.dumps(config))
        await ws.send(photo)
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"stream refused: {ready}")
        t_ready = time.perf_counter()
        first = asyncio.get_running_loop().create_future()
        indices: list[int] = []

        async def read() -> dict[str, object]:
            async for message in ws:
                if isinstance(message, str):
                    return dict(json.loads(message))
                if not first.done():
                    first.set_result(time.perf_counter())
                indices.append(struct.unpack(">I", message[:4])[0])
            raise RuntimeError("closed without done")

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
            await asyncio.sleep(CHUNK_S)
        await ws.send(json.dumps({"type": "end"}))
        done = await reader
        if indices != list(range(len(indices))) or done.get("frames") != len(indices):
            raise RuntimeError(f"frames out of order or missing: {len(indices)} received, done says {done}")
        return t_ready - t_connect, await first - t0, len(indices)


def server_latency(photo: Path, audio: AudioTrack, sessions: int, seconds: float = 2.0) -> None:
    import httpx

    clip = audio.head(seconds)
    pcm = (np.clip(clip.samples, -1, 1) * 32767).astype("<i2").tobytes()
    with tempfile.TemporaryDirectory() as tmp, real_server(Path(tmp)) as (base, admin):
        def token(scope: str) -> str:
            r = httpx.post(f"{base}/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=admin)
            r.raise_for_status()
            return str(r.json()["access_token"])

        r = httpx.post(f"{base}/v1/subjects", data={"name": "Eileen", "purposes": ["bench"]},
                       files=[("photos", (photo.name, photo.read_bytes(), "image/png")),
                              ("evidence", ("consent.txt", b"benchmark consent", "text/plain"))],
                       headers={"Authorization": f"Bearer {token('consent:write')}"}, timeout=120)
        r.raise_for_status()
        config = {"subject_id": r.json()["id"], "purpose": "bench", "sample_rate": clip.sample_rate}
        url = "ws" + base[4:] + "/v1/stream"
        gen_token = token("generate")
        results = [asyncio.run(server_session(url, gen_token, config, photo.read_bytes(), pcm, clip.sample_rate))
                   for _ in range(sessions)]
    ready, first, frames = zip(*results, strict=True)
    print(f"real server (provatar serve + websockets client, loopback), {sessions} sessions of {seconds:.1f} s "
          f"in 200 ms chunks sent in real time, {frames[0]} frames each, all in order with 'done':")
    print(f"  first frame after the first chunk: {percentiles(list(first))}")
    print(f"  connect -> ready (auth, policy: consent + identity, face rig): {percentiles(list(ready))}")


def long_stream(gen: TalkingFaceGenerator, prepared: object, base: AudioTrack, minutes: float, out: Path) -> None:
    pause = np.zeros(base.sample_rate, np.float32)
    reps = int(np.ceil(minutes * 60 / (base.duration_s + 1.0)))
    samples = np.concatenate([np.concatenate([base.samples, pause]) for _ in range(reps)])
    samples = samples[: int(minutes * 60 * base.sample_rate)]
    audio = AudioTrack(samples, base.sample_rate)
    session = StreamingSession(gen, prepared, sample_rate=audio.sample_rate)  # type: ignore[arg-type]
    marker = Watermarker(WatermarkPayload.for_generation(b"k" * 32, 0x0BADCAFE))
    chunk = int(CHUNK_S * audio.sample_rate)
    samples_rss: list[tuple[float, float]] = []
    done = threading.Event()
    t0 = time.perf_counter()

    def sample_memory() -> None:
        while not done.wait(1.0):
            samples_rss.append((time.perf_counter() - t0, rss_mb()))

    def frames():  # type: ignore[no-untyped-def]
        for i in range(0, len(samples), chunk):
            yield from session.push(samples[i : i + chunk])
        yield from session.finish()

    threading.Thread(target=sample_memory, daemon=True).start()
    marked = threaded((marker.embed(f) for f in threaded(frames())), name="mark")
    encode_mp4(marked, audio, out)
    done.set()
    wall = time.perf_counter() - t0
    info = probe_video(out)
    n = len(samples_rss)
    thirds = [samples_rss[i * n // 3 : (i + 1) * n // 3] for i in range(3)]
    print(f"long stream: {audio.duration_s / 60:.1f} min of audio, {info.frames} frames "
          f"(expected {int(np.ceil(audio.duration_s * 25 - 1e-9))}), wall {wall:.0f} s "
          f"= {audio.duration_s / wall:.2f}x real time")
    print(f"  video {info.duration_s:.3f} s, audio {info.audio_duration_s:.3f} s "
          f"(difference {abs((info.audio_duration_s or 0) - info.duration_s) * 1000:.0f} ms)")
    print("  resident memory (MB), max per third of the run: "
          + ", ".join(f"{max(r for _, r in part):.0f}" for part in thirds if part))
    for label, start in (("first", 0.0), ("last", audio.duration_s - 10.0)):
        offset, corr = sync_offset(out, audio, start, 10.0)
        print(f"  audio-visual offset over the {label} 10 s (dlib mouth vs 2-8 Hz envelope, cross-correlation): "
              f"{offset:+.0f} ms (correlation {corr:.2f})")


def sync_offset(video: Path, audio: AudioTrack, start_s: float, seconds: float) -> tuple[float, float]:
    """Measure lip sync on [start_s, start_s + seconds) of the encoded file, with the evaluation harness's dlib stack
    (independent of the generator), against the audio that was streamed."""
    import av

    sys.path.insert(0, str(ROOT / "bench"))
    from eval_generation import DlibFaces, measure_clip

    frames, times = [], []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            t = float(frame.time or 0.0)
            if start_s <= t < start_s + seconds:
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(t - start_s)
    lo = int(start_s * audio.sample_rate)
    segment = AudioTrack(audio.samples[lo : lo + int(seconds * audio.sample_rate)], audio.sample_rate)
    report, _ = measure_clip("segment", "generated", frames, np.asarray(times), segment, DlibFaces(), None, None, 5)
    return float(report.av_offset_ms or float("nan")), float(report.corr_at_offset or float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--no-server", action="store_true", help="skip the latency against `provatar serve`")
    ap.add_argument("--no-long", action="store_true", help="skip the long-audio run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = TalkingFaceGenerator(GenerationConfig())
    prepared = gen.prepare(load_image(PHOTO, max_pixels=10**8))
    audio = load_audio(AUDIO)
    lat = first_frame_latency(gen, prepared, audio, args.sessions)
    print(f"in process: first frame after the first {CHUNK_S * 1000:.0f} ms chunk (render + watermark + JPEG), "
          f"{args.sessions} sessions: {percentiles(lat)}")
    if not args.no_server:
        server_latency(PHOTO, audio, args.sessions)
    if not args.no_long:
        with tempfile.TemporaryDirectory() as tmp:
            long_stream(gen, prepared, audio, args.minutes, Path(tmp) / "long.mp4")


if __name__ == "__main__":
    main()
