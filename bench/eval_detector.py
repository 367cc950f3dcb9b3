"""Evaluate the multi-cue detector the honest way: every generator scored by a model that never saw it.

Protocol (bench/detector_corpus.py's clips, features cached by bench/detector_features.py):
  leave one generator out   for each generator G: fit the fusion on every other generator and the real clips --
                            minus any real clip G's fakes were made from -- then score G's clips
  leave one source out      each real clip scored by a fusion fitted without it and without every fake made from it
  per generator             AUC of G's held-out scores against the real clips' held-out scores
  CRF 28                    the same with every clip re-encoded at x264 CRF 28 (training keeps both variants)
  threshold                 the shipped rule (split-conformal at a 5 % target FPR: with 14 real clips, just above
                            the highest held-out real score), itself chosen without the real clip it is applied
                            to: how many real clips are flagged
  provatar, in distribution our renders scored leave-one-photo-out by a fusion that saw our other renders
  cues                      each cue alone, leave-one-generator-out, the same way
  speed                     a 60 s 1280x720 clip with audio through the full detector (best of 2)

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/eval_detector.py [--no-speed]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_corpus import MEDIA  # noqa: E402
from bench.detector_features import all_rows  # noqa: E402
from safeguards.cues.fusion import (  # noqa: E402
    TARGET_FPR,
    Row,
    fit_cue,
    fit_fusion,
    fpr_interval,
    renderer_specialist,
    threshold_from_real,
)

# The other generators in ../shared/media/synthetic; classic manipulations and our own renderer are reported apart.
OWN = "provatar"
SPECIALISTS = renderer_specialist()
CLASSIC = ("classic_swap", "classic_mouth", "classic_interp")


def to_row(d: dict) -> Row:
    return Row(cues=d["cues"], label=d["label"], group=d["generator"] if d["label"] else f"real:{d['source']}")


def held_out_scores(rows: list[dict], *, score_variant: str, cue: str | None = None) -> dict[str, list[float]]:
    """Held-out probability of every clip of ``score_variant``, keyed by generator (real clips under "real").

    With ``cue`` the score is that cue's own model alone (0.5 where the cue does not apply)."""
    by_gen: dict[str, list[float]] = defaultdict(list)
    generators = sorted({r["generator"] for r in rows if r["label"] == 1})
    real_sources = sorted({r["source"] for r in rows if not r["label"]})
    units = [("gen", g) for g in generators] + [("src", s) for s in real_sources]
    for kind, unit in units:
        if kind == "gen":
            test = [r for r in rows if r["generator"] == unit]
            sources = {r["source"] for r in test}
            train = [r for r in rows if r["generator"] != unit and r["source"] not in sources]
        else:
            test = [r for r in rows if r["label"] == 0 and r["source"] == unit]
            train = [r for r in rows if r["source"] != unit]
        test = [r for r in test if r["variant"] == score_variant]
        if not test:
            continue
        train_rows = [to_row(r) for r in train]
        if cue is None:
            model = fit_fusion(train_rows, specialists=SPECIALISTS)
            scores = [model.probability(r["cues"]) for r in test]
        else:
            m = fit_cue(train_rows, cue, 0.3)
            scores = [1 / (1 + np.exp(-m.logit(r["cues"][cue]))) if m and cue in r["cues"] else 0.5 for r in test]
        by_gen["real" if kind == "src" else unit] += [float(s) for s in scores]
    return by_gen


def auc(pos: list[float], neg: list[float]) -> float:
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))


def tpr_at_fpr(pos: list[float], neg: list[float], fpr: float) -> float:
    neg_sorted = sorted(neg, reverse=True)
    k = int(np.floor(fpr * len(neg)))  # negatives allowed above the threshold
    thr = neg_sorted[k] if k < len(neg_sorted) else -np.inf
    return float(np.mean(np.array(pos) > thr))


def shipped_threshold(real: list[float]) -> float:
    """The rule bench/train_detector.py ships: safeguards.cues.fusion.threshold_from_real at TARGET_FPR."""
    return threshold_from_real(real)[0] if len(real) >= 2 else 0.5


def flagged_real(real: list[float]) -> int:
    """How many real clips the shipped threshold rule flags when the rule never sees the clip it judges."""
    return sum(int(r >= shipped_threshold(real[:i] + real[i + 1 :])) for i, r in enumerate(real))


def table(rows: list[dict]) -> tuple[list[str], dict[str, float]]:
    out: list[str] = []
    orig = held_out_scores(rows, score_variant="original")
    crf = held_out_scores(rows, score_variant="crf28")
    real, real_crf = orig.pop("real"), crf.pop("real")
    gens = sorted(orig)
    others = [g for g in gens if g != OWN and g not in CLASSIC]
    out.append("| held-out generator | clips | AUC | AUC after CRF 28 | TPR at the threshold |")
    out.append("|---|---|---|---|---|")
    thr = shipped_threshold(real)
    aucs, aucs_crf = {}, {}
    for g in others + [g for g in CLASSIC if g in orig] + ([OWN] if OWN in orig else []):
        aucs[g], aucs_crf[g] = auc(orig[g], real), auc(crf[g], real_crf)
        tpr = float(np.mean(np.array(orig[g]) >= thr))
        out.append(f"| {g} | {len(orig[g])} | {aucs[g]:.3f} | {aucs_crf[g]:.3f} | {tpr:.2f} |")
    mean_other = float(np.mean([aucs[g] for g in others]))
    mean_other_crf = float(np.mean([aucs_crf[g] for g in others]))
    pos_other = [s for g in others for s in orig[g]]
    out.append("")
    out.append(f"mean AUC over {len(others)} held-out other generators: {mean_other:.3f} "
               f"(after CRF 28: {mean_other_crf:.3f}, drop {mean_other - mean_other_crf:+.3f})")  # fmt: skip
    classic = [g for g in CLASSIC if g in orig]
    if classic:
        out.append(f"mean AUC over the classic manipulations: {np.mean([aucs[g] for g in classic]):.3f}")
    out.append(
        f"pooled AUC, other generators vs real: {auc(pos_other, real):.3f}; TPR at 1 % FPR: "
        f"{tpr_at_fpr(pos_other, real, 0.01):.2f} (with {len(real)} real clips, 1 % FPR = none flagged)"
    )
    out.append(f"real clips: {len(real)}; flagged at the shipped threshold rule ({thr:.3f} on all of them): "
               f"{flagged_real(real)} (each judged by a threshold chosen without it); "
               f"max held-out real score {max(real):.3f}")  # fmt: skip
    lo, hi = fpr_interval(real, thr)
    out.append(
        f"threshold rule: target FPR {TARGET_FPR:.2f}, split-conformal over {len(real)} held-out real scores: "
        f"expected FPR for a new real clip {threshold_from_real(real)[1]:.3f} (90 % interval {lo:.3f}-{hi:.3f})"
    )
    summary = {"mean_auc_other": mean_other, "mean_auc_other_crf28": mean_other_crf, "threshold": thr,
               "real_flagged": flagged_real(real)}  # fmt: skip
    return out, summary


def own_in_distribution(rows: list[dict]) -> str:
    """Our renders, leave-one-photo-out, against the real clips' leave-one-source-out scores."""
    own_scores = []
    for src in sorted({r["source"] for r in rows if r["generator"] == OWN}):
        train = [to_row(r) for r in rows if r["source"] != src]
        model = fit_fusion(train, specialists=SPECIALISTS)
        own_scores += [model.probability(r["cues"]) for r in rows
                       if r["source"] == src and r["generator"] == OWN and r["variant"] == "original"]  # fmt: skip
    real = held_out_scores(rows, score_variant="original")["real"]
    return f"provatar renders, leave-one-photo-out (provenance stripped): AUC {auc(own_scores, real):.3f} " \
           f"over {len(own_scores)} renders vs {len(real)} real"  # fmt: skip


def cue_table(rows: list[dict]) -> list[str]:
    names = sorted({n for r in rows for n in r["cues"]} - set(SPECIALISTS))
    out = ["| cue alone | mean AUC, held-out other generators | applies to (clips) |", "|---|---|---|"]
    for n in names:
        s = held_out_scores(rows, score_variant="original", cue=n)
        real = s.pop("real")
        others = [g for g in s if g != OWN and g not in CLASSIC]
        applies = sum(1 for r in rows if r["variant"] == "original" and n in r["cues"])
        total = sum(1 for r in rows if r["variant"] == "original")
        out.append(f"| {n} | {np.mean([auc(s[g], real) for g in others]):.3f} | {applies}/{total} |")
    return out


def speed() -> str:
    """A 60 s 1280x720 clip with audio (a real clip looped) through detect_media, best of 2."""
    from generation.media import encode_mp4, iter_video_frames, load_audio
    from safeguards.classifier import SyntheticClipClassifier
    from safeguards.cues import FusionModel
    from safeguards.detection import detect_media

    src = MEDIA / "videos_real" / "interview_public_figure_hyperlips_video2.mp4"
    frames = list(iter_video_frames(src))
    audio = load_audio(src)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.mp4"
        n = 60 * 25
        looped = (frames[i % len(frames)] for i in range(n))
        reps = int(np.ceil(60 / audio.duration_s))
        from generation.media import AudioTrack

        long_audio = AudioTrack(np.tile(audio.samples, reps)[: 60 * audio.sample_rate], audio.sample_rate)
        encode_mp4(looped, long_audio, path, fps=25, crf=23)
        clf = SyntheticClipClassifier.load_default()
        fusion = FusionModel.load_default()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            detect_media(path, watermark_key=b"k" * 32, trust_anchors_pem=None, classifier=clf, fusion=fusion,
                         resolve_tag=lambda tag: None)  # fmt: skip
            times.append(time.perf_counter() - t0)
    return f"detect_media on a 60 s 1280x720 H.264 clip with AAC audio: best {min(times):.2f} s (runs {times[0]:.2f}, {times[1]:.2f})"  # noqa: E501


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    if not (MEDIA / "SOURCES.tsv").exists():
        sys.exit("needs ../shared/media")
    rows = all_rows()
    lines, _ = table(rows)
    print("\n".join(lines))
    print()
    print(own_in_distribution(rows))
    print()
    print("\n".join(cue_table(rows)))
    if not args.no_speed:
        print()
        print(speed())


if __name__ == "__main__":
    main()
