"""Watermark evaluation (issue 5, items 1-2; issue 9, item 4): robustness, false payloads, speed, invisibility.

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/eval_watermark.py [--clips 8] [--random-frames 10000]
     [--png marked_zoom.png] [--scheme v3|v2]

- Clips: 4 s (100 frames) rendered by our own generator at 512x512 from the portraits in ../shared/media (the
  shipped NASA portrait when that folder is absent), each marked with a fresh random tag. The first 2 s (50 frames,
  the shortest clip the issue asks for) go through every transformation below and the pairwise combinations of the
  five kinds (H.264 CRF 28; CRF 23 then CRF 28; half size and back; 10 % crop on one side, the video keeping its
  smaller size; brightness x0.8 / x1.2 on R, G, B); in a pair the crop side and brightness sign rotate with the
  clip. Renditions served at another size (issue 9) are scaled with FFmpeg's swscale (PyAV, bicubic, the scale
  filter's default) and not scaled back; the excerpt is seconds 1-3 of the whole clip after a CRF 18 encode (the
  output), re-encoded at CRF 28.
- False payloads: every image in ../shared/media as a one-frame clip, every 50-frame window (step 25) of every
  video in its videos/, videos_real/ and synthetic/ folders, and `--random-frames` random unmarked 512x512 frames
  (random crops of the shared and shipped photos at random scale, brightness and noise; pure noise; smooth random
  fields), each as its own one-frame clip.
- Speed: embedding frames/s at 512x512 on one thread and on two (the pipeline marks on its own thread), best of 5,
  for the current scheme and v2; decode time per 50-frame clip; decode time of 48 unmarked 720p frames (every
  scale tried). PSNR: marked vs unmarked generator frames, RGB, for the current scheme and v2.
- `--scheme v2` marks the clips with the previous scheme (8x8-pixel blocks) instead: the "before" table.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from safeguards import _ecc  # noqa: E402
from safeguards.watermark import (  # noqa: E402
    FALSE_POSITIVE_BOUND,
    MAX_ATTEMPTS,
    SCHEME_V2,
    SCHEME_V3,
    WatermarkDetector,
    Watermarker,
    WatermarkPayload,
    WatermarkScheme,
)

SHARED = ROOT.parent / "shared" / "media"
EXAMPLE_PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
EXAMPLE_AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"
KEY = secrets.token_bytes(32)
Frames = list[np.ndarray]


# --- transformations ------------------------------------------------------------------------------------------


def h264(frames: Frames, crf: int) -> Frames:
    """libx264 yuv420p in an in-memory MP4 and back (PyAV)."""
    buf = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width // 2 * 2, height // 2 * 2, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            even = np.ascontiguousarray(frame[: height // 2 * 2, : width // 2 * 2])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(even, format="rgb24")))
        container.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def half_and_back(frames: Frames) -> Frames:
    out = []
    for f in frames:
        h, w = f.shape[:2]
        small = Image.fromarray(f).resize((w // 2, h // 2), Image.Resampling.BILINEAR)
        out.append(np.asarray(small.resize((w, h), Image.Resampling.BILINEAR)))
    return out


def rescale(frames: Frames, factor: float) -> Frames:
    """Serve at `factor` x the size, not scaled back (FFmpeg's swscale through PyAV, bicubic)."""
    h, w = frames[0].shape[:2]
    size = {"width": round(w * factor) // 2 * 2, "height": round(h * factor) // 2 * 2}
    return [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(**size, interpolation="BICUBIC").to_ndarray()
            for f in frames]  # fmt: skip


def excerpt(whole: Frames) -> Frames:
    """Seconds 1-3 of a 4 s clip: the output encoded at CRF 18, the excerpt cut and re-encoded at CRF 28."""
    return h264(h264(whole, 18)[25:75], 28)


def crop(frames: Frames, side: str, share: float = 0.10) -> Frames:
    h, w = frames[0].shape[:2]
    dy, dx = round(h * share), round(w * share)
    cut = {"top": (slice(dy, None), slice(None)), "bottom": (slice(None, h - dy), slice(None)),
           "left": (slice(None), slice(dx, None)), "right": (slice(None), slice(None, w - dx))}[side]  # fmt: skip
    return [np.ascontiguousarray(f[cut]) for f in frames]


def brightness(frames: Frames, factor: float) -> Frames:
    return [np.clip(np.rint(f.astype(np.float32) * factor), 0, 255).astype(np.uint8) for f in frames]


SIDES = ("left", "top", "right", "bottom")
Transform = Callable[[Frames], Frames]


def kind(name: str, clip_index: int) -> tuple[str, Transform]:
    """One transformation of a kind; crop side and brightness sign rotate with the clip."""
    side = SIDES[clip_index % 4]
    factor = 0.8 if clip_index % 2 == 0 else 1.2
    return {
        "crf28": ("H.264 CRF 28", lambda fs: h264(fs, 28)),
        "crf23+28": ("CRF 23 then CRF 28", lambda fs: h264(h264(fs, 23), 28)),
        "half": ("half size and back", half_and_back),
        "crop": ("crop 10 % (side rotates)", lambda fs: crop(fs, side)),
        "bright": ("brightness x0.8/x1.2 (rotates)", lambda fs: brightness(fs, factor)),
    }[name]


SINGLES: list[tuple[str, Callable[[int], Transform]]] = [
    ("none", lambda i: lambda fs: fs),
    ("H.264 CRF 28", lambda i: lambda fs: h264(fs, 28)),
    ("CRF 23 then CRF 28", lambda i: lambda fs: h264(h264(fs, 23), 28)),
    ("half size and back", lambda i: half_and_back),
    *[(f"crop 10 % {s}", (lambda s: lambda i: lambda fs: crop(fs, s))(s)) for s in SIDES],
    ("brightness x0.8", lambda i: lambda fs: brightness(fs, 0.8)),
    ("brightness x1.2", lambda i: lambda fs: brightness(fs, 1.2)),
    # Issue 9: renditions at another size, not scaled back.
    ("served at 0.5x (256 px)", lambda i: lambda fs: rescale(fs, 0.5)),
    ("served at 0.75x (384 px)", lambda i: lambda fs: rescale(fs, 0.75)),
    ("served at 1.5x (768 px)", lambda i: lambda fs: rescale(fs, 1.5)),
    ("0.5x + CRF 28", lambda i: lambda fs: h264(rescale(fs, 0.5), 28)),
    ("0.75x + CRF 28", lambda i: lambda fs: h264(rescale(fs, 0.75), 28)),
    ("0.5x + CRF 28 + crop 10 % (side rotates)", lambda i: lambda fs: crop(h264(rescale(fs, 0.5), 28), SIDES[i % 4])),
    ("served at 360p (0.70x: scale from the frame size) + CRF 28", lambda i: lambda fs: h264(rescale(fs, 0.703), 28)),
]
EXCERPT = "2 s excerpt from the middle of a 4 s output (CRF 18, cut, CRF 28)"
# Pairs of kinds; edits first, the platform's re-encode last. CRF 28 with CRF 23+28 is the same kind twice.
PAIRS = [
    (a, b)
    for a, b in [("bright", "crop"), ("bright", "half"), ("crop", "half"), ("bright", "crf28"), ("crop", "crf28"),
                 ("half", "crf28"), ("bright", "crf23+28"), ("crop", "crf23+28"), ("half", "crf23+28")]  # fmt: skip
]


# --- inputs ---------------------------------------------------------------------------------------------------


def portraits(media: Path) -> list[Path]:
    folder = media / "portraits"
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    return found or [EXAMPLE_PHOTO]


def render_clips(n: int, media: Path) -> list[tuple[str, Frames]]:
    """n 4 s clips from our generator, cycling through the portraits and motion seeds."""
    import torch

    from generation import GenerationConfig, NoFaceFound, TalkingFaceGenerator, load_audio, load_image

    torch.set_num_threads(1)
    audio = load_audio(EXAMPLE_AUDIO).head(4.0)
    prepared = []
    for path in portraits(media):
        gen = TalkingFaceGenerator(GenerationConfig(size=512, fps=25, seed=0, device="cpu"))
        try:
            prepared.append((path.stem, gen.prepare(load_image(path, max_pixels=50_000_000))))
        except NoFaceFound:
            continue
    clips = []
    for i in range(n):
        name, face = prepared[i % len(prepared)]
        gen = TalkingFaceGenerator(GenerationConfig(size=512, fps=25, seed=i, device="cpu"))
        clips.append((f"{name}#{i}", list(gen.frames(face, audio))[:100]))
    return clips


def _images(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


VIDEO_FOLDERS = ("videos", "videos_real", "synthetic")


def real_media(media: Path) -> tuple[Iterator[tuple[str, Frames]], int, int]:
    """One-frame clips of every shared image, then 50-frame windows (step 25) of every shared video, lazily."""
    images = _images(media)
    videos = sorted(p for folder in VIDEO_FOLDERS for p in (media / folder).glob("*") if p.suffix in {".mp4", ".gif"})

    def clips() -> Iterator[tuple[str, Frames]]:
        for path in images:
            with Image.open(path) as image:
                yield path.name, [np.asarray(image.convert("RGB"))]
        for path in videos:
            with av.open(str(path)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            for start in range(0, max(len(frames) - 25, 1), 25):
                yield f"{path.parent.name}/{path.name}@{start}", frames[start : start + 50]

    return clips(), len(images), len(videos)


def random_frames(n: int, media: Path, seed: int = 0) -> Iterator[np.ndarray]:
    """Random unmarked 512x512 frames: crops of real photos (scale, brightness, noise), noise, smooth fields."""
    rng = np.random.default_rng(seed)
    photos = [EXAMPLE_PHOTO, *_images(media)]
    images = []
    for p in photos:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    for i in range(n):
        pick = i % 10
        if pick < 8:  # a random crop of a photo, resized, re-lit, with sensor noise
            im = images[rng.integers(len(images))]
            side = int(rng.integers(min(im.size) // 3, min(im.size) + 1))
            x, y = int(rng.integers(0, im.size[0] - side + 1)), int(rng.integers(0, im.size[1] - side + 1))
            f = np.asarray(im.crop((x, y, x + side, y + side)).resize((512, 512), Image.Resampling.BILINEAR))
            f = f.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.normal(0, rng.uniform(0, 4), f.shape)
        elif pick == 8:
            f = rng.integers(0, 256, (512, 512, 3)).astype(np.float32)
        else:  # smooth random field (sky, walls): low-res noise upsampled
            low = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
            f = np.asarray(Image.fromarray(low).resize((512, 512), Image.Resampling.BICUBIC)).astype(np.float32)
        yield np.clip(np.rint(f), 0, 255).astype(np.uint8)


# --- measurements ---------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255**2 / mse) if mse > 0 else math.inf


def embed_fps(frames: Frames, threads: int, scheme: WatermarkScheme = SCHEME_V3) -> float:
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 1), scheme=scheme)
    batch = (frames * (200 // len(frames) + 1))[:200]
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        if threads == 1:
            for f in batch:
                marker.embed(f)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(marker.embed, batch))
        best = min(best, time.perf_counter() - t0)
    return len(batch) / best


def write_zoom(path: Path, original: np.ndarray, marked: np.ndarray) -> None:
    """Original | marked | difference x16 (grey = 0), a 128x128 crop of the face zoomed 4x (nearest)."""
    y, x = original.shape[0] // 2 - 64, original.shape[1] // 2 - 64
    a, b = original[y : y + 128, x : x + 128], marked[y : y + 128, x : x + 128]
    diff = np.clip(128 + 16 * (b.astype(np.int16) - a.astype(np.int16)), 0, 255).astype(np.uint8)
    strip = np.concatenate([a, b, diff], axis=1)
    Image.fromarray(strip).resize((strip.shape[1] * 4, strip.shape[0] * 4), Image.Resampling.NEAREST).save(path)


def decode_720p_s(media: Path, detector: WatermarkDetector) -> float | None:
    """Seconds to decode 48 unmarked 720p frames (every scale tried): what a detection of such a video costs."""
    path = media / "videos_real" / "woman_blazer_outdoor_s32.mp4"
    if not path.is_file():
        return None
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(48), container.decode(video=0), strict=False)]
    t0 = time.perf_counter()
    detector.detect(frames)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--random-frames", type=int, default=10_000)
    parser.add_argument("--media", type=Path, default=SHARED, help="shared media folder (default ../shared/media)")
    parser.add_argument("--png", type=Path, default=None, help="write a zoomed original/marked/difference PNG")
    parser.add_argument("--scheme", choices=("v3", "v2"), default="v3", help="mark with this scheme (v2: before)")
    parser.add_argument("--skip-false", action="store_true", help="robustness table and speed only")
    args = parser.parse_args()
    scheme = SCHEME_V3 if args.scheme == "v3" else SCHEME_V2
    detector = WatermarkDetector(KEY)

    t0 = time.perf_counter()
    clips = render_clips(args.clips, args.media)
    print(f"rendered {len(clips)} clips of 100 frames in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    rows: dict[str, list[tuple[bool, bool, float, float | None]]] = {}
    psnrs: dict[str, list[float]] = {"v3": [], "v2": []}
    decode_s: list[float] = []
    for i, (name, whole) in enumerate(clips):
        tag = WatermarkPayload.new_tag()
        payload = WatermarkPayload.for_generation(KEY, tag)
        marker = Watermarker(payload, scheme=scheme)
        marked_whole = [marker.embed(f) for f in whole]
        frames, marked = whole[:50], marked_whole[:50]
        for label, other in (("v3", SCHEME_V3), ("v2", SCHEME_V2)):
            om = marked if other is scheme else [Watermarker(payload, scheme=other).embed(f) for f in frames[::5]]
            psnrs[label] += [psnr(a, b) for a, b in zip(frames if other is scheme else frames[::5], om, strict=True)]
        if i == 0 and args.png:
            write_zoom(args.png, frames[25], marked[25])
        tests: list[tuple[str, Transform, Frames]] = [(label, make(i), marked) for label, make in SINGLES]
        for a, b in PAIRS:
            (la, fa), (lb, fb) = kind(a, i), kind(b, i)
            tests.append((f"{la} + {lb}", (lambda fa, fb: lambda fs: fb(fa(fs)))(fa, fb), marked))
        tests.append((EXCERPT, excerpt, marked_whole))
        for label, transform, source in tests:
            seen = transform(source)
            t1 = time.perf_counter()
            result = detector.detect(seen)
            if label == "none":
                decode_s.append(time.perf_counter() - t1)
            right = result.found and result.tag == tag
            rows.setdefault(label, []).append((result.found, right, result.confidence, result.scale))
            if not right:
                print(f"  MISSED {label} on {name}: margin {result.bit_margin:.3f}", file=sys.stderr)
        print(f"clip {i + 1}/{len(clips)} {name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    print(f"\n| transformation ({len(clips)} clips of 2 s, 512x512, own generator, marked {scheme.algorithm}) "
          "| recovered | right id | read at scale | confidence min / mean |")
    print("|---|---|---|---|---|")
    for label, res in rows.items():
        n = len(res)
        got, right = sum(r[0] for r in res), sum(r[1] for r in res)
        conf = [r[2] for r in res if r[1]] or [0.0]
        scales = sorted({r[3] for r in res if r[1] and r[3] is not None})
        print(f"| {label} | {got}/{n} | {right}/{n} ({right / n:.0%}) | {', '.join(f'{s:g}' for s in scales) or '-'} "
              f"| {min(conf):.2f} / {np.mean(conf):.2f} |")

    print("\n| measure | value |")
    print("|---|---|")
    if not args.skip_false:
        media, n_images, n_videos = real_media(args.media)
        false_media = windows = attempts = codewords = 0
        t1 = time.perf_counter()
        for label, frames in media:
            r = detector.detect(frames, max_frames=50)
            if r.found:
                print(f"  FALSE PAYLOAD on {label}: {r.tag:08x}", file=sys.stderr)
            false_media += r.found
            windows += 1
            attempts, codewords = attempts + r.attempts, codewords + r.codewords
        print(f"real media: {windows} detections in {time.perf_counter() - t1:.0f} s", file=sys.stderr)
        t1 = time.perf_counter()
        false_random = 0
        for f in random_frames(args.random_frames, args.media):
            r = detector.detect([f])
            false_random += r.found
            attempts, codewords = attempts + r.attempts, codewords + r.codewords
        random_s = time.perf_counter() - t1
        detections = windows + args.random_frames
        print(f"| false payloads, real media ({n_images} images, {windows - n_images} windows of 50 frames from "
              f"{n_videos} videos in {', '.join(VIDEO_FOLDERS)}) | {false_media} |")
        print(f"| false payloads, random unmarked 512x512 frames (one-frame clips) "
              f"| {false_random} / {args.random_frames} |")
        print(f"| BCH+key attempts on unmarked content / BCH codewords among them (all rejected by the HMAC) "
              f"| {attempts} / {codewords} (expected {attempts * _ecc.RANDOM_DECODE_BOUND:.2f}) |")
        print(f"| observed: 0 of {detections} detections -> 95 % upper bound (rule of three) | {3 / detections:.1e} |")
        print(f"| decode a one-frame clip (random frames) | {random_s / max(args.random_frames, 1) * 1000:.0f} ms |")
    print(f"| false-positive bound per detection (<= {MAX_ATTEMPTS} attempts x 2^-15.6 BCH x 2^-32 HMAC) "
          f"| {FALSE_POSITIVE_BOUND:.1e} |")
    for label, other in (("v3", SCHEME_V3), ("v2", SCHEME_V2)):
        fps1, fps2 = embed_fps(clips[0][1][:50], 1, other), embed_fps(clips[0][1][:50], 2, other)
        print(f"| embed 512x512 {label}, 1 thread / 2 threads (best of 5 x 200 frames) | {fps1:.0f} / {fps2:.0f} "
              "frames/s |")
        print(f"| PSNR marked vs unmarked {label} (RGB, {len(psnrs[label])} frames) min / mean "
              f"| {min(psnrs[label]):.1f} / {np.mean(psnrs[label]):.1f} dB |")
    print(f"| decode a 50-frame clip (mean over clips, untransformed) | {np.mean(decode_s):.2f} s |")
    s720 = decode_720p_s(args.media, detector)
    if s720 is not None:
        n_size = len(detector.size_scales(720, 1280))
        print(f"| decode 48 unmarked 720p frames (every scale tried: {len(detector.tries)} fixed + {n_size} from the "
              f"frame size) | {s720:.2f} s |")


if __name__ == "__main__":
    main()
