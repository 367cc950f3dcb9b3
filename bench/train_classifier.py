"""Train the synthetic-clip classifier (safeguards/models/synthetic_clip_v2.npz) and report held-out AUC.

Synthetic: our own generator (generation.TalkingFaceGenerator) animating every face in ../shared/media (portraits,
celebrities, and still frames of the real videos) with every speech clip (unwatermarked: the network must not
lean on the mark; bench/eval_clip_classifier.py also scores watermarked clips).
Real: windows of the real talking-head videos, and the same photos at the generator's own framing under natural
hand-held camera motion (drift, rotation, zoom, fresh sensor noise, exposure flicker). Pairing every identity on
both sides forces the network to learn the animation, not the person. Every clip is then treated like an upload
(optional downscale and back, optional crop of up to 10 % on one side, H.264 at CRF 18-32 through PyAV), so no
metadata or C2PA survives and the network only ever sees pixels.

Sources are split three ways, never shared between splits:
  test   (held out, reported): portrait woman_smiling_happy, celebrity paul_rudd, video talkinghead_man_suit
         (its windows, and its stills animated), and speech german_deyu (any clip using it).
  calib  (Platt scaling and the threshold): astronaut, both Obama photos, video man_no_audio_d0.
  train: everything else.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_classifier.py [--quick] [--cache /tmp/clips.npz]
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generation import GenerationConfig, NoFaceFound, TalkingFaceGenerator, load_audio, load_image  # noqa: E402
from generation.media import iter_video_frames  # noqa: E402
from safeguards.classifier import (  # noqa: E402
    CROP,
    DEFAULT_MODEL,
    DEFAULT_WINDOWS,
    MIN_FRAMES,
    ClipNet,
    FaceCropper,
    save_model,
    triplet_input,
)

MEDIA = ROOT.parent / "shared" / "media"
CLIP = 24  # frames per clip kept for training and evaluation
ENCODED = 40  # frames re-encoded per clip: CLIP is cut from the end, away from the GOP's first (intra) frame
SECONDS = 8.0  # of each speech clip animated per (face, speech) pair
TEST_SOURCES = {"woman_smiling_happy", "paul_rudd_facenet", "talkinghead_man_suit_retalking1", "german_deyu"}
CALIB_SOURCES = {"astronaut_eileen_collins", "obama_face_recognition", "obama_small", "man_no_audio_d0"}


@dataclass
class Clip:
    crops: np.ndarray  # (CLIP, CROP, CROP) uint8 face-centred grey crops
    label: int  # 1 synthetic, 0 real
    source: str
    split: str  # "train" | "calib" | "test"


def split_of(*sources: str) -> str:
    """A clip belongs to the most restrictive split of any source it uses (test > calib > train)."""
    if any(s in TEST_SOURCES for s in sources):
        return "test"
    if any(s in CALIB_SOURCES for s in sources):
        return "calib"
    return "train"


def reencode(frames: list[np.ndarray], rng: random.Random, *, crf: int | None = None) -> list[np.ndarray]:
    """What an upload goes through: optional downscale and back, optional crop, H.264 at a random CRF, decode."""
    h, w = frames[0].shape[:2]
    out = frames
    if rng.random() < 0.5:
        s = rng.uniform(0.5, 0.9)
        small = (max(64, int(w * s)) // 2 * 2, max(64, int(h * s)) // 2 * 2)
        out = [cv2.resize(cv2.resize(f, small, interpolation=cv2.INTER_AREA), (w, h)) for f in out]
    if rng.random() < 0.5:
        c = rng.uniform(0.0, 0.1)
        side = rng.choice(["l", "r", "t", "b"])
        dx, dy = int(w * c), int(h * c)
        crops = {
            "l": (slice(None), slice(dx, None)),
            "r": (slice(None), slice(0, w - dx)),
            "t": (slice(dy, None), slice(None)),
            "b": (slice(0, h - dy), slice(None)),
        }
        ys, xs = crops[side]
        out = [cv2.resize(np.ascontiguousarray(f[ys, xs]), (w, h)) for f in out]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = w // 2 * 2, h // 2 * 2, "yuv420p"
        st.options = {"crf": str(crf if crf is not None else rng.randint(18, 32)), "preset": "veryfast"}
        for f in out:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: st.height, : st.width]), format="rgb24")
            for p in st.encode(frame):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]


def handheld(photo: np.ndarray, n: int, rng: random.Random, size: int = 256) -> list[np.ndarray]:
    """A real photo filmed by a hand-held camera: smooth random drift/rotation/zoom, fresh sensor noise, flicker.

    The photo's centre square is shown at ``size`` pixels (pass the generator's face crop to frame it the same way).
    """
    h, w = photo.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    base = cv2.resize(photo[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    amp = rng.uniform(0.5, 4.0) * size / 256
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(4)]
    freqs = [rng.uniform(0.1, 0.8) for _ in range(4)]
    sigma = rng.uniform(0.8, 3.0)
    frames = []
    for t in range(n):
        s = t / 25.0
        dx = amp * math.sin(2 * math.pi * freqs[0] * s + phases[0])
        dy = amp * math.sin(2 * math.pi * freqs[1] * s + phases[1])
        ang = 0.3 * amp / 4 * math.sin(2 * math.pi * freqs[2] * s + phases[2])
        zoom = 1.02 + 0.01 * math.sin(2 * math.pi * freqs[3] * s + phases[3])
        m = cv2.getRotationMatrix2D((size / 2, size / 2), ang, zoom)
        m[:, 2] += (dx, dy)
        f = cv2.warpAffine(base, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        gain = 1.0 + 0.01 * rng.uniform(-1, 1)
        noisy = f.astype(np.float32) * gain + np.random.default_rng(rng.randrange(1 << 30)).normal(0, sigma, f.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def face_sources() -> list[tuple[str, np.ndarray]]:
    """(source name, RGB photo) for every single-subject face photo plus two stills from each real video."""
    out: list[tuple[str, np.ndarray]] = []
    for d in ("portraits", "celebrities"):
        for p in sorted((MEDIA / d).iterdir()):
            if not p.name.startswith("two_"):
                out.append((p.stem, load_image(p, max_pixels=40_000_000)))
    for v in sorted((MEDIA / "videos").iterdir()):
        frames = list(iter_video_frames(v))
        for k in (0, len(frames) // 2):
            out.append((v.stem, frames[k]))
    return out


def _to_clip(
    frames: list[np.ndarray], rng: random.Random, cropper: FaceCropper, label: int, source: str, split: str
) -> Clip:
    """Re-encode ENCODED frames as one upload, then keep the last CLIP: a long video's frames are mostly
    predicted (P/B) frames, whose texture and noise differ from the intra frame that starts a short encode."""
    decoded = reencode(frames, rng)[-CLIP:]
    return Clip(cropper.crops(decoded), label, source, split)


def make_clips(rng: random.Random, *, per_pair: int, per_video: int, per_photo: int) -> list[Clip]:
    cropper = FaceCropper()
    clips: list[Clip] = []
    audios = [(p.stem, load_audio(p).head(SECONDS)) for p in sorted((MEDIA / "speech").iterdir())]
    for name, photo in face_sources():
        size = rng.choice([256, 384, 512, 512])
        gen = TalkingFaceGenerator(GenerationConfig(size=size, seed=rng.randrange(1000)))
        try:
            prepared = gen.prepare(photo)
        except NoFaceFound:
            print(f"  skip {name}: no face", file=sys.stderr)
            continue
        for audio_name, audio in audios:
            frames = list(gen.frames(prepared, audio))
            for _ in range(per_pair):
                start = rng.randrange(0, len(frames) - ENCODED)
                window = frames[start : start + ENCODED]
                clips.append(_to_clip(window, rng, cropper, 1, f"gen:{name}+{audio_name}", split_of(name, audio_name)))
        # The same face, same framing, filmed hand-held: real.
        for _ in range(per_photo):
            frames = handheld(prepared.face.image, ENCODED, rng, size=size)
            clips.append(_to_clip(frames, rng, cropper, 0, f"photo:{name}", split_of(name)))
    for p in sorted((MEDIA / "nonface").iterdir()) + sorted((MEDIA / "portraits").glob("two_*")):
        photo = load_image(p, max_pixels=40_000_000)
        for _ in range(per_photo):
            frames = handheld(photo, ENCODED, rng, size=rng.choice([256, 512]))
            clips.append(_to_clip(frames, rng, cropper, 0, f"photo:{p.stem}", split_of(p.stem)))
    for v in sorted((MEDIA / "videos").iterdir()):
        frames = list(iter_video_frames(v))
        for _ in range(per_video):
            start = rng.randrange(0, len(frames) - ENCODED)
            window = frames[start : start + ENCODED]
            if rng.random() < 0.5:
                window = [np.ascontiguousarray(f[:, ::-1]) for f in window]
            clips.append(_to_clip(window, rng, cropper, 0, f"video:{v.stem}", split_of(v.stem)))
    return clips


def clip_logits(net: ClipNet, crops: np.ndarray) -> float:
    """Mean logit over every 3-frame window of one clip (what the shipped classifier does over a video)."""
    idx = np.arange(len(crops) - MIN_FRAMES + 1)
    triplets = np.stack([crops[i : i + MIN_FRAMES] for i in idx])  # (N, 3, CROP, CROP)
    with torch.no_grad():
        return float(net(torch.from_numpy(triplet_input(triplets))).mean())


def train(clips: list[Clip], *, steps: int, seed: int, width: int) -> ClipNet:
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    pos = [c for c in clips if c.split == "train" and c.label == 1]
    vids = [c for c in clips if c.split == "train" and c.label == 0 and c.source.startswith("video:")]
    photos = [c for c in clips if c.split == "train" and c.label == 0 and not c.source.startswith("video:")]
    net = ClipNet(width=width)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    batch = 48
    t0 = time.time()
    for step in range(steps):
        # Balanced batches: half synthetic, a quarter real video, a quarter hand-held photos.
        chosen = (
            [(pos[i], 1) for i in g.integers(0, len(pos), batch // 2)]
            + [(vids[i], 0) for i in g.integers(0, len(vids), batch // 4)]
            + [(photos[i], 0) for i in g.integers(0, len(photos), batch // 4)]
        )
        xs, ys = [], []
        for clip, label in chosen:
            t = int(g.integers(0, len(clip.crops) - MIN_FRAMES + 1))
            trip = clip.crops[t : t + MIN_FRAMES]
            if g.random() < 0.5:
                trip = trip[:, :, ::-1]
            if g.random() < 0.5:
                trip = trip[::-1]  # time reversal: the animation cue does not depend on direction
            xs.append(trip)
            ys.append(label)
        x = torch.from_numpy(triplet_input(np.stack(xs)))
        y = torch.tensor(ys, dtype=torch.float32)
        net.train()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:4d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", file=sys.stderr)
    return net.eval()


def save_clips(path: Path, clips: list[Clip]) -> None:
    np.savez_compressed(
        path,
        crops=np.stack([c.crops for c in clips]),
        label=np.array([c.label for c in clips]),
        source=np.array([c.source for c in clips]),
        split=np.array([c.split for c in clips]),
    )


def load_clips(path: Path) -> list[Clip]:
    d = np.load(path)
    return [
        Clip(c, int(lab), str(s), str(sp))
        for c, lab, s, sp in zip(d["crops"], d["label"], d["source"], d["split"], strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer clips and steps (smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "safeguards" / "models" / DEFAULT_MODEL)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--cache", type=Path, help="reuse/save the generated clips here (model experiments)")
    args = ap.parse_args()
    if not (MEDIA / "SOURCES.tsv").exists():
        sys.exit("needs ../shared/media")
    torch.set_num_threads(2)
    rng = random.Random(args.seed)
    np.random.seed(args.seed)
    t0 = time.time()
    if args.cache and args.cache.exists():
        clips = load_clips(args.cache)
    else:
        k = 1 if args.quick else 2
        clips = make_clips(rng, per_pair=k + 1, per_video=8 * k, per_photo=2 * k)
        if args.cache:
            save_clips(args.cache, clips)
    print(f"{len(clips)} clips in {time.time() - t0:.0f}s", file=sys.stderr)
    net = train(clips, steps=100 if args.quick else args.steps, seed=args.seed, width=args.width)

    z = {s: np.array([clip_logits(net, c.crops) for c in clips if c.split == s]) for s in ("train", "calib", "test")}
    y = {s: np.array([c.label for c in clips if c.split == s]) for s in ("train", "calib", "test")}
    # Platt scaling on the calibration split: probability = sigmoid(a * mean_logit + b).
    platt = LogisticRegression(C=1e4).fit(z["calib"][:, None], y["calib"])
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    prob = {s: 1.0 / (1.0 + np.exp(-(a * z[s] + b))) for s in z}
    # Operating threshold: flag at most 1 % of the calibration split's real clips, and never below 0.5 (a still
    # image, which carries no evidence, scores exactly 0.5 and must not be flagged).
    threshold = float(min(0.99, max(0.5, np.quantile(prob["calib"][y["calib"] == 0], 0.99) + 1e-3)))
    report: dict[str, float | int | str] = {}
    for s in ("train", "calib", "test"):
        auc = roc_auc_score(y[s], z[s])
        tpr = float((prob[s][y[s] == 1] >= threshold).mean())
        fpr = float((prob[s][y[s] == 0] >= threshold).mean())
        report |= {f"auc_{s}": auc, f"tpr_{s}": tpr, f"fpr_{s}": fpr, f"clips_{s}": len(y[s])}
        print(f"{s:5s}: {len(y[s])} clips ({int(y[s].sum())} synthetic)  AUC {auc:.4f}  TPR {tpr:.3f}  FPR {fpr:.3f}")
    print(f"Platt a={a:.3f} b={b:.3f}; threshold {threshold:.3f}")
    test_clips = [c for c in clips if c.split == "test"]
    for src in sorted({c.source.split("+")[0] for c in test_clips}):
        vals = [p for c, p in zip(test_clips, prob["test"], strict=True) if c.source.startswith(src)]
        print(f"  test {src:45s} n={len(vals):3d} prob min {min(vals):.3f} median {np.median(vals):.3f} "
              f"max {max(vals):.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": "synthetic-clip-v2-cnn",
        "input": f"face-crop-gray-triplet-{CROP}",
        "width": args.width,
        "platt_a": a,
        "platt_b": b,
        "threshold": threshold,
        "windows": DEFAULT_WINDOWS,
        "seed": args.seed,
        "steps": args.steps,
        "test_sources": sorted(TEST_SOURCES),
        "calib_sources": sorted(CALIB_SOURCES),
        **report,
    }
    save_model(args.out, net, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
