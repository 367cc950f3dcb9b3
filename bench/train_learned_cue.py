"""Train the detector's learned cue on real footage vs every fake source, and measure it honestly.

The model is the classifier's `ClipNet` on face-centred grey crops of three consecutive frames (the middle frame and
both frame differences: `safeguards.classifier.triplet_input`), so the shipped weights load through
`SyntheticClipClassifier.load(path)` and score exactly what `safeguards.cues.learned.LearnedCue` feeds it: runs of
three consecutive frames limited to 640 px, cut at the face box of the middle frame. Unlike the renderer-only v2
model, it is trained on the detector corpus (`bench/detector_corpus.py`): the real clips against the ten other
generators, our renders and the classic manipulations, in both variants (as found and re-encoded at CRF 28).

  extract   TRIPLETS windows per clip, spread over it, both variants -> bench/out/learned_cue/crops_<variant>.npz
  train     grouped K-fold out-of-fold logits for every clip (bench/out/learned_oof.jsonl), per-generator AUC,
            then the final model on everything -> safeguards/models/any_generator_cnn_v1.npz

Generalisation over memorisation:
- heavy augmentation on the fly, the same for all three frames of a window: time reversal, flip, integer shift or a
  small affine, 0.5-1.5x rescale and back, blur, sensor noise, contrast/brightness/gamma, JPEG quality 25-90 (a cheap
  stand-in for the CRF 18-35 re-encodes; the CRF 28 variant is real H.264), a cut-out patch;
- balanced batches: half real (uniform over real sources), half fake (uniform over generators, then clips), so
  neither a generator with many clips nor a long clip dominates;
- identity shortcuts: the same person is real in one clip and fake in another (HyperLips of two real interviews,
  classic manipulations of real clips, swaps onto shared portraits that our renderer also animates). Every fold
  holds out whole generators and whole real sources, and drops from training every clip that shares a source
  (either side of the swap) with any held-out clip, so no out-of-fold logit has seen its person or its generator.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_learned_cue.py extract     # ~3 min on 2 cores
    .venv/bin/python bench/train_learned_cue.py train --device cuda --workers 15 --threads 4

Training is data-augmentation bound: 6 models x 1600 steps took 148 s on one H200 with 15 loader processes (a step
is ~4 s on a shared 2-core CPU). Batches are deterministic for a given seed and --workers (each loader process
draws from its own seeded stream); the shipped model was trained with --workers 15.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from safeguards.classifier import CROP, DEFAULT_WINDOWS, MIN_FRAMES, ClipNet, save_model, triplet_input  # noqa: E402
from safeguards.cues.track import limit_side  # noqa: E402

CACHE = ROOT / "bench" / "out" / "learned_cue"  # crops_<variant>.npz
OOF = ROOT / "bench" / "out" / "learned_oof.jsonl"
MODEL = ROOT / "safeguards" / "models" / "any_generator_cnn_v1.npz"
TRIPLETS = {"original": 24, "crf28": 16}  # windows per clip and variant (the cue itself scores up to 12)
MAX_SIDE = 640  # the cue's FaceTrack limits triplet frames to this side before cropping
OTHER_GENERATORS = ("aniportrait", "anitalker", "emo", "vasa1", "hyperlips", "musev", "fantasytalking", "wav2lip",
                    "sadtalker", "dfdc")  # fmt: skip


@dataclass(frozen=True)
class ClipInfo:
    path: str
    variant: str
    label: int
    generator: str
    source: str
    links: tuple[str, ...]  # every source it shows: the clip's own, plus a swap's donor photo


# ---------------------------------------------------------------- extraction (needs the corpus and mediapipe)


def _windows(path: Path, count: int) -> list[list[np.ndarray]]:
    """``count`` runs of three consecutive frames spread evenly over the clip (as the cue's track takes them);
    only those frames are converted and kept."""
    import av

    from generation.media import probe_video

    last = (probe_video(path).frames or 0) - MIN_FRAMES
    starts = sorted({int(round(i * last / max(count - 1, 1))) for i in range(count)}) if last >= 0 else []
    wanted: dict[int, list[int]] = {}  # frame index -> the windows it belongs to (short clips: they overlap)
    for i, s in enumerate(starts):
        for k in range(MIN_FRAMES):
            wanted.setdefault(s + k, []).append(i)
    runs: list[list[np.ndarray]] = [[] for _ in starts]
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                rgb = limit_side(frame.to_ndarray(format="rgb24"), MAX_SIDE)
                for i in wanted[index]:
                    runs[i].append(rgb)
            if index >= max(wanted, default=-1):
                break
    return [r for r in runs if len(r) == MIN_FRAMES]


def extract(cache: Path, variants: list[str]) -> None:
    import bench.detector_corpus as corpus
    from safeguards.classifier import FaceCropper

    swap_donor = {(kind, Path(t).stem): Path(str(d)).stem for kind, t, d in corpus.CLASSIC if d}
    cropper = FaceCropper()
    t0 = time.time()
    for variant in variants:
        crops, owner, infos = [], [], []
        for clip in corpus.build(variant):
            donor = swap_donor.get((clip.generator, clip.source))
            links = (clip.source, donor) if donor else (clip.source,)
            info = ClipInfo(str(clip.path), variant, clip.label, clip.generator, clip.source, links)
            windows = _windows(clip.path, TRIPLETS[variant])
            for w in windows:
                crops.append(cropper.crops(w))  # (3, CROP, CROP) at the middle frame's face box
                owner.append(len(infos))
            infos.append(info)
            print(f"{variant:8s} {clip.generator:15s} {clip.path.name:50s} {len(windows)} windows "
                  f"({time.time() - t0:.0f}s)", file=sys.stderr)  # fmt: skip
        path = cache / f"crops_{variant}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, crops=np.stack(crops), owner=np.array(owner, np.int32),
                            clips=np.array(json.dumps([i.__dict__ for i in infos])))  # fmt: skip
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(crops)} windows of {len(infos)} clips)")


def load_cache(cache: Path) -> tuple[np.ndarray, np.ndarray, list[ClipInfo]]:
    """Both variants' windows, ``owner`` indexing the clip list."""
    crops, owner, infos = [], [], []
    for variant in TRIPLETS:
        with np.load(cache / f"crops_{variant}.npz", allow_pickle=False) as d:
            crops.append(d["crops"])
            owner.append(d["owner"] + len(infos))
            infos += [ClipInfo(**{**c, "links": tuple(c["links"])}) for c in json.loads(str(d["clips"]))]
    return np.concatenate(crops), np.concatenate(owner), infos


# ---------------------------------------------------------------- augmentation


def augment(trip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One window (3, CROP, CROP) uint8 as an upload might show it; every step hits the three frames alike
    (they come from one camera and one encode), except sensor noise, which is fresh in every frame."""
    frames = [np.ascontiguousarray(f) for f in (trip[::-1] if rng.random() < 0.5 else trip)]
    if rng.random() < 0.5:
        frames = [np.ascontiguousarray(f[:, ::-1]) for f in frames]
    g = rng.random()
    if g < 0.4:  # integer shift: moves the face without resampling its pixels
        dx, dy = rng.integers(-10, 11, 2)
        frames = [np.roll(np.pad(f, 10, mode="reflect"), (dy, dx), (0, 1))[10:-10, 10:-10] for f in frames]
    elif g < 0.7:  # small zoom / rotation / shift, as a different face box would cut it
        m = cv2.getRotationMatrix2D((CROP / 2, CROP / 2), rng.uniform(-8, 8), rng.uniform(0.85, 1.2))
        m[:, 2] += rng.uniform(-10, 10, 2)
        frames = [cv2.warpAffine(f, m, (CROP, CROP), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
                  for f in frames]  # fmt: skip
    if rng.random() < 0.5:  # the video was served at another size (0.5-1.5x) and the face crop rescaled
        s = rng.uniform(0.5, 1.5)
        side = int(round(CROP * s))
        up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA)[int(rng.integers(3))]
        if s < 1:
            frames = [cv2.resize(cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA), (CROP, CROP),
                                 interpolation=up) for f in frames]  # fmt: skip
        else:
            frames = [cv2.resize(cv2.resize(f, (side, side), interpolation=up), (CROP, CROP),
                                 interpolation=cv2.INTER_AREA) for f in frames]  # fmt: skip
    x = np.stack(frames).astype(np.float32)
    if rng.random() < 0.25:
        sigma = rng.uniform(0.4, 1.5)
        x = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in x])
    if rng.random() < 0.8:  # exposure: contrast, brightness, gamma (the grey crop's stand-in for colour jitter)
        x = np.clip(x * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255)
        x = 255.0 * (x / 255.0) ** rng.uniform(0.75, 1.35)
        if rng.random() < 0.3:  # flicker: each frame's own small gain
            x = x * rng.uniform(0.98, 1.02, (3, 1, 1))
    if rng.random() < 0.35:
        x = x + rng.normal(0, rng.uniform(0.8, 5.0), x.shape)
    if rng.random() < 0.25:  # cut-out: no single region (eyes, mouth, hair line) may carry the decision alone
        h = int(rng.integers(16, 48))
        y0, x0 = rng.integers(0, CROP - h, 2)
        x[:, y0 : y0 + h, x0 : x0 + h] = x[:, y0 : y0 + h, x0 : x0 + h].mean()
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        q = [int(cv2.IMWRITE_JPEG_QUALITY), int(rng.integers(25, 91))]
        out = np.stack([cv2.imdecode(cv2.imencode(".jpg", f, q)[1], cv2.IMREAD_GRAYSCALE) for f in out])
    return out


# ---------------------------------------------------------------- folds, sampling, training


def _folds(infos: list[ClipInfo], gens: list[str], reals: list[str], k: int) -> list[tuple[set[int], set[int]]]:
    folds = []
    for f in range(k):
        held_g, held_r = set(gens[f::k]), set(reals[f::k])
        test = {i for i, c in enumerate(infos) if (c.generator in held_g if c.label else c.source in held_r)}
        blocked = {s for i in test for s in infos[i].links}
        train = {i for i, c in enumerate(infos)
                 if i not in test and c.generator not in held_g and not blocked & set(c.links)}  # fmt: skip
        folds.append((train, test))
    return folds


def make_folds(infos: list[ClipInfo], k: int, seed: int, tries: int = 200) -> list[tuple[set[int], set[int]]]:
    """(train clip indices, test clip indices) per fold. A fold holds out whole fake generators and whole real
    sources; training then drops every clip sharing a source (link) with any held-out clip. Of ``tries`` seeded
    shuffles, the one whose poorest fold keeps the most real training clips wins (dropping linked clips can
    otherwise leave a fold with a handful of real sources)."""
    rng = np.random.default_rng(seed)
    gens = sorted({c.generator for c in infos if c.label == 1})
    reals = sorted({c.source for c in infos if c.label == 0})
    best: tuple[tuple[int, int], list[tuple[set[int], set[int]]]] | None = None
    for _ in range(tries):
        g = [gens[i] for i in rng.permutation(len(gens))]
        r = [reals[i] for i in rng.permutation(len(reals))]
        folds = _folds(infos, g, r, k)
        key = (min(sum(1 - infos[i].label for i in tr) for tr, _ in folds), min(len(tr) for tr, _ in folds))
        if best is None or key > best[0]:
            best = (key, folds)
    assert best is not None
    return best[1]


class Batches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Endless balanced, augmented batches: half real (uniform source, then clip, variant, window), half fake
    (uniform generator, then clip, variant, window). Each worker has its own seeded stream (deterministic)."""

    def __init__(self, crops: np.ndarray, owner: np.ndarray, infos: list[ClipInfo], clips: set[int],
                 batch: int, seed: int) -> None:  # fmt: skip
        self.crops, self.batch, self.seed = crops, batch, seed
        windows: dict[int, np.ndarray] = {i: np.flatnonzero(owner == i) for i in clips}
        by_key: dict[tuple[int, str], list[int]] = {}
        for i in sorted(clips):
            c = infos[i]
            by_key.setdefault((c.label, c.generator if c.label else c.source), []).append(i)
        self.groups = {lab: [v for (lb, _), v in sorted(by_key.items()) if lb == lab] for lab in (0, 1)}
        self.windows = windows

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        cv2.setNumThreads(1)  # one process per core already
        while True:
            xs, ys = [], []
            for lab in (0, 1):
                groups = self.groups[lab]
                for _ in range(self.batch // 2):
                    clips = groups[int(rng.integers(len(groups)))]
                    w = self.windows[clips[int(rng.integers(len(clips)))]]
                    xs.append(augment(self.crops[w[int(rng.integers(len(w)))]], rng))
                    ys.append(lab)
            yield torch.from_numpy(triplet_input(np.stack(xs))), torch.tensor(ys, dtype=torch.float32)


def train(crops: np.ndarray, owner: np.ndarray, infos: list[ClipInfo], clips: set[int], args: argparse.Namespace,
          seed: int) -> ClipNet:  # fmt: skip
    torch.manual_seed(seed)
    device = torch.device(args.device)
    net = ClipNet(width=args.width).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.15)
    data = Batches(crops, owner, infos, clips, args.batch, seed)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4 if args.workers else None)  # fmt: skip
    t0, running = time.time(), 0.0
    net.train()
    for step, (x, y) in enumerate(loader):
        if step == args.steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device)
        # Label smoothing: a handful of clips per generator cannot justify certainty.
        loss = F.binary_cross_entropy_with_logits(net(x), y * 0.9 + 0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = 0.95 * running + 0.05 * loss.item() if step else loss.item()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"    step {step:5d} loss {running:.4f} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return net.eval().cpu()


@torch.no_grad()
def clip_logits(net: ClipNet, crops: np.ndarray, owner: np.ndarray, clips: list[int]) -> dict[int, float]:
    """Mean window logit per clip (what the cue computes), no augmentation."""
    out = {}
    for i in clips:
        x = torch.from_numpy(triplet_input(crops[owner == i]))
        out[i] = float(net(x).double().mean())
    return out


def auc_table(infos: list[ClipInfo], z: dict[int, float]) -> dict[str, dict[str, float]]:
    """Per variant: each fake generator's AUC against all real clips of that variant, and the mean over the ten
    other generators."""
    table: dict[str, dict[str, float]] = {}
    for variant in TRIPLETS:
        real = [z[i] for i, c in enumerate(infos) if c.variant == variant and c.label == 0]
        row = {}
        for g in sorted({c.generator for c in infos if c.label == 1}):
            fake = [z[i] for i, c in enumerate(infos) if c.variant == variant and c.generator == g]
            row[g] = float(roc_auc_score([0] * len(real) + [1] * len(fake), real + fake))
        row["mean_other10"] = float(np.mean([row[g] for g in OTHER_GENERATORS if g in row]))
        row["all_fakes"] = float(
            roc_auc_score(
                [c.label for c in infos if c.variant == variant],
                [z[i] for i, c in enumerate(infos) if c.variant == variant],
            )
        )
        table[variant] = row
    return table


def run_training(args: argparse.Namespace) -> None:
    crops, owner, infos = load_cache(args.cache)
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    t0 = time.time()
    print(
        f"{len(crops)} windows, {len(infos)} clips; {args.folds} folds, {args.steps} steps x {args.batch}",
        file=sys.stderr,
    )
    oof: dict[int, float] = {}
    fold_of: dict[int, int] = {}
    for f, (tr, te) in enumerate(make_folds(infos, args.folds, args.seed)):
        held = sorted(
            {infos[i].generator for i in te if infos[i].label} | {infos[i].source for i in te if not infos[i].label}
        )
        print(f"  fold {f}: train {len(tr)} clips, test {len(te)}: {', '.join(held)}", file=sys.stderr, flush=True)
        net = train(crops, owner, infos, tr, args, seed=args.seed + 1 + f)
        oof |= clip_logits(net, crops, owner, sorted(te))
        fold_of |= dict.fromkeys(te, f)
    assert len(oof) == len(infos), "every clip needs an out-of-fold logit"
    args.oof.parent.mkdir(parents=True, exist_ok=True)
    with args.oof.open("w") as fh:
        for i, c in enumerate(infos):
            fh.write(
                json.dumps(
                    {
                        "path": c.path,
                        "variant": c.variant,
                        "generator": c.generator,
                        "source": c.source,
                        "label": c.label,
                        "fold": fold_of[i],
                        "logit": round(oof[i], 4),
                    }
                )
                + "\n"
            )
    table = auc_table(infos, oof)
    gens = sorted({c.generator for c in infos if c.label == 1})
    print(f"\nout-of-fold AUC (each generator's clips vs all real clips of the variant; {time.time() - t0:.0f}s)")
    print(f"  {'generator':16s} " + " ".join(f"{v:>9s}" for v in table))
    for g in [*gens, "mean_other10", "all_fakes"]:
        print(f"  {g:16s} " + " ".join(f"{table[v][g]:9.3f}" for v in table))

    # Calibration from the out-of-fold logits (the final model's own training logits would be overconfident).
    z = np.array([oof[i] for i in range(len(infos))])
    y = np.array([c.label for c in infos])
    platt = LogisticRegression(C=1e4).fit(z[:, None], y)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    if a <= 0:  # out of fold the logit carries no evidence: a flat probability, never an inverted one
        a, b = 0.0, float(np.log(y.mean() / (1 - y.mean())))
    prob = 1 / (1 + np.exp(-(a * z + b)))
    threshold = float(min(0.99, max(0.5, np.quantile(prob[y == 0], 0.99) + 1e-3)))
    net = train(crops, owner, infos, set(range(len(infos))), args, seed=args.seed)
    meta = {
        "name": "any-generator-cnn-v1",
        "input": f"face-crop-gray-triplet-{CROP}",
        "width": args.width,
        "platt_a": a,
        "platt_b": b,
        "threshold": threshold,
        "windows": DEFAULT_WINDOWS,
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "folds": args.folds,
        "oof_auc": {v: {k: round(x, 4) for k, x in row.items()} for v, row in table.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(args.out, net, meta)
    print(f"Platt a={a:.3f} b={b:.3f}; threshold {threshold:.3f}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {args.oof} in {time.time() - t0:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["extract", "train"])
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--oof", type=Path, default=OOF)
    ap.add_argument("--out", type=Path, default=MODEL)
    ap.add_argument("--corpus", type=Path, help="the corpus's derived files (default: bench/out/detector_corpus)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(TRIPLETS), choices=list(TRIPLETS))
    args = ap.parse_args()
    if args.mode == "extract":
        if args.corpus:
            import bench.detector_corpus as corpus

            corpus.OUT = args.corpus
        extract(args.cache, args.variants)
    else:
        run_training(args)


if __name__ == "__main__":
    main()
