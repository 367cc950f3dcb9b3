"""The cue fusion: fitting, calibration, contributions, and the shipped model's calibration on its own corpus.

`detector_features_sample.json` holds the cue features of the corpus clips (bench/detector_corpus.py: numbers
only, no pixels) as measured when the shipped model was fitted; the shipped model must still be calibrated on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from safeguards.cues import CueMeasurement, FusionModel
from safeguards.cues.fusion import Row, fit_fusion, fpr_interval, threshold_from_real

SAMPLE = Path(__file__).parent / "data" / "detector_features_sample.json"


def _rows(n: int = 80, seed: int = 0) -> list[Row]:
    """Made rows: cue "good" separates the classes, cue "noise" does not, cue "sometimes" applies to half."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        y = i % 2
        cues = {"good": {"a": float(rng.normal(2.0 * y, 1.0))}, "noise": {"b": float(rng.normal())}}
        if i % 4 < 2:
            cues["sometimes"] = {"c": float(rng.normal(1.0 * y, 1.0))}
        rows.append(Row(cues, y, f"g{i % 10}"))
    return rows


def test_fit_gives_weight_to_the_informative_cue_and_a_monotone_probability() -> None:
    model = fit_fusion(_rows())
    assert model.weights["good"] > 0.5
    assert model.weights["good"] > 2 * model.weights.get("noise", 0.0)
    low = model.probability({"good": {"a": -1.0}, "noise": {"b": 0.0}})
    high = model.probability({"good": {"a": 3.0}, "noise": {"b": 0.0}})
    assert low < 0.3 < 0.7 < high


def test_fused_score_reports_contributions_and_skips_cues_that_do_not_apply() -> None:
    model = fit_fusion(_rows())
    fused = model.fuse(
        {
            "good": CueMeasurement(True, {"a": 3.0}),
            "sometimes": CueMeasurement(False, reason="no audio"),
            "noise": CueMeasurement(True, {"b": 0.1}),
        }
    )
    by_name = {c.name: c for c in fused.cues}
    assert not by_name["sometimes"].applies and by_name["sometimes"].contribution == 0.0
    assert by_name["good"].contribution > 0 and by_name["good"].score > 0.8
    total = model.intercept + sum(c.contribution for c in fused.cues)
    assert fused.logit == pytest.approx(total)
    assert fused.probability == pytest.approx(1 / (1 + np.exp(-total)))


def test_threshold_with_few_real_scores_goes_above_all_of_them() -> None:
    """Five real clips cannot show a 5 % rate: the threshold is above every one, the rate 1/(5+1)."""
    reals = [0.05, 0.1, 0.2, 0.62, 0.7]
    model = fit_fusion(_rows(), real_scores=reals, target_fpr=0.05)
    assert 0.7 < model.threshold < 0.71
    assert model.expected_fpr == pytest.approx(1 / 6)


def test_threshold_with_many_real_scores_meets_its_target_rate_on_new_real_clips() -> None:
    """Split-conformal: over many calibration sets of 99 real scores, a new real clip from the same distribution
    lands above the threshold 5 % of the time (an off-by-one in k gives 4 % or 6 %)."""
    rng = np.random.default_rng(3)
    lo, hi = 0.52, 0.96  # inside the rule's 0.5 floor and 0.99 cap, so the uniform law gives the rate exactly
    rates = []
    for _ in range(2000):
        thr, expected = threshold_from_real(rng.uniform(lo, hi, 99), target_fpr=0.05)
        assert expected == pytest.approx(0.05)
        rates.append((hi - thr) / (hi - lo))
    # The threshold's 1e-3 margin over the 5th highest score lowers the rate by at most 1e-3 / (hi - lo) = 0.002.
    assert 0.046 < np.mean(rates) < 0.051


def test_threshold_judged_leave_one_out_flags_k_real_clips() -> None:
    """Each real clip judged by the threshold made without it: the rule flags k of them, here k = 1."""
    reals = list(np.linspace(0.51, 0.9, 14))
    flagged = sum(r >= threshold_from_real(reals[:i] + reals[i + 1 :])[0] for i, r in enumerate(reals))
    assert flagged == 1


def test_fpr_interval_is_the_beta_law_of_a_new_real_clip() -> None:
    """No real score at or above the threshold of 14: Beta(1, 14), whose quantiles are 1 - (1 - q)^(1/14)."""
    reals = list(np.linspace(0.3, 0.7, 14))
    lo, hi = fpr_interval(reals, 0.71)
    assert lo == pytest.approx(1 - 0.95 ** (1 / 14), rel=1e-6)
    assert hi == pytest.approx(1 - 0.05 ** (1 / 14), rel=1e-6)


def test_model_round_trips_through_json(tmp_path: Path) -> None:
    model = fit_fusion(_rows())
    model.save(tmp_path / "m.json")
    again = FusionModel.load(tmp_path / "m.json")
    row = {"good": {"a": 1.0}, "noise": {"b": -0.5}, "sometimes": {"c": 0.2}}
    assert again.probability(row) == pytest.approx(model.probability(row))


def _sample() -> list[dict]:
    return json.loads(SAMPLE.read_text())


def test_shipped_model_is_calibrated_on_its_corpus() -> None:
    """Fails if the shipped weights, the feature code's scale or the calibration drift apart: the predicted
    probabilities must match the observed share of synthetic clips within 0.15 in each probability bin, and
    rank the clips as when fitted."""
    from sklearn.metrics import roc_auc_score

    model = FusionModel.load_default()
    rows = _sample()
    p = np.array([model.probability(r["cues"]) for r in rows])
    y = np.array([r["label"] for r in rows])
    # Balanced classes: weight each so the calibration target is the even prior the model is fitted for.
    w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    bins = np.digitize(p, [0.2, 0.4, 0.6, 0.8])
    for b in np.unique(bins):
        m = bins == b
        if w[m].sum() < 3:
            continue
        observed = float((w[m] * y[m]).sum() / w[m].sum())
        predicted = float((w[m] * p[m]).sum() / w[m].sum())
        assert abs(observed - predicted) < 0.15 + 0.5 / np.sqrt(m.sum()), (b, observed, predicted)
    assert roc_auc_score(y, p) >= 0.75  # in-sample 0.80 when fitted; a sign error or a stale model falls far below
    assert 0.5 <= model.threshold < 1.0 and 0.0 <= model.expected_fpr <= 0.15


def test_shipped_model_is_reproducible_from_the_sample() -> None:
    """bench/train_detector.py on the same features gives the same weights (the training is deterministic)."""
    model = FusionModel.load_default()
    refit = fit_fusion([Row(r["cues"], r["label"], r["group"]) for r in _sample()], specialists=model.specialists)
    for name, w in model.weights.items():
        assert refit.weights[name] == pytest.approx(w, abs=1e-6)
    assert refit.intercept == pytest.approx(model.intercept, abs=1e-6)
