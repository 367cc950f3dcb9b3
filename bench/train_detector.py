"""Fit the shipped cue fusion (safeguards/models/detector_fusion_v1.json) on the whole corpus.

Uses every clip of bench/detector_corpus.py in both variants (as uploaded, and re-encoded at CRF 28), the cue
features cached by bench/detector_features.py. The threshold comes from the real clips' leave-one-source-out scores
(bench/eval_detector.py's protocol), so it is set on scores of clips the model had not seen, at the target
false-positive rate of `safeguards.cues.fusion.threshold_from_real`. Deterministic: the same corpus and cue code give
the same file.

`--from-sample` refits from the features saved with the last fit (tests/safeguards/data/detector_features_sample.json)
instead of measuring the corpus: the same rows, so the same weights, for a change of fitting or threshold rule only.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train_detector.py [--out PATH] [--from-sample]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_features import all_rows, cue_code_version  # noqa: E402
from bench.eval_detector import SPECIALISTS, held_out_scores, table, to_row  # noqa: E402
from safeguards.cues.fusion import DEFAULT_FUSION, TARGET_FPR, fit_fusion, fpr_interval  # noqa: E402

OUT = ROOT / "safeguards" / "models" / DEFAULT_FUSION
# The features the model was fitted on (numbers only): tests/safeguards/test_fusion.py checks the shipped model
# against them, so a change of feature code or fitting that is not followed by retraining fails the suite.
SAMPLE = ROOT / "tests" / "safeguards" / "data" / "detector_features_sample.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--from-sample", action="store_true", help="refit from the saved features, measure nothing")
    args = ap.parse_args()
    rows = json.loads(SAMPLE.read_text()) if args.from_sample else all_rows()
    real_scores = held_out_scores(rows, score_variant="original")["real"]
    _, summary = table(rows)
    counts = Counter(f"{r['generator']}" for r in rows if r["variant"] == "original")
    model = fit_fusion(
        [to_row(r) for r in rows],
        real_scores=real_scores,
        specialists=SPECIALISTS,
        notes={
            "trained_on": dict(sorted(counts.items())),
            "threshold_rule": f"split-conformal over {len(real_scores)} held-out real clips, target FPR {TARGET_FPR}",
            "variants": ["original", "crf28"],
            "cue_code": cue_code_version(),
            "script": "bench/train_detector.py",
            # What the report tells the analyst about how far the probability can be trusted.
            "held_out_mean_auc_other_generators": round(summary["mean_auc_other"], 3),
            "held_out_mean_auc_other_generators_crf28": round(summary["mean_auc_other_crf28"], 3),
        },
    )
    # The spread of the false-positive rate a new real clip meets, given these few calibration clips.
    model.notes["expected_fpr_90"] = [round(v, 3) for v in fpr_interval(real_scores, model.threshold)]
    model.save(args.out)
    sample = [{"name": r["name"], "variant": r["variant"], "generator": r["generator"], "label": r["label"],
               "source": r["source"], "group": to_row(r).group, "cues": r["cues"]} for r in rows]  # fmt: skip
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE.write_text(json.dumps(sample, separators=(",", ":")) + "\n")
    lo, hi = model.notes["expected_fpr_90"]
    print(
        f"wrote {args.out}: threshold {model.threshold:.3f}, expected FPR {model.expected_fpr:.3f} "
        f"(90 % interval {lo:.3f}-{hi:.3f})"
    )
    for name, spec in model.specialists.items():
        rule = f"max(stack, {spec['a']:.2f} * logit + {spec['b']:.2f})"
        print(f"  {name:14s} specialist ({spec['model']}): fused logit = {rule}")
    for name, w in model.weights.items():
        print(f"  {name:14s} weight {w:.3f}  features {model.cues[name].features}")


if __name__ == "__main__":
    main()
