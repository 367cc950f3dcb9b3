"""The identity calibration's fail-safe rule and its intervals (pure functions, no media)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.calibrate_identity import Sample, ci, crossval, tune


def test_rule_blocks_under_the_closest_stranger_and_reviews_past_the_farthest_same_pair() -> None:
    th = tune(same=[0.30, 0.42, 0.505], diff=[0.516, 0.7, 0.9])
    assert (th.block.match, th.block.review) == (0.46, 0.61)
    assert (th.subject.match, th.subject.review) == (0.43, 0.56)
    # Overlapping classes still give ordered bands (the review band absorbs the overlap).
    th = tune(same=[0.3, 0.7], diff=[0.5, 0.8])
    assert th.block.match <= th.block.review and th.subject.match <= th.subject.review


def test_clopper_pearson_interval() -> None:
    lo, hi = ci(0, 72)
    assert lo == 0.0 and hi == pytest.approx(0.0499, abs=1e-3)  # "0 of 72" still allows up to ~5 %
    lo, hi = ci(72, 72)
    assert hi == 1.0 and lo == pytest.approx(0.95, abs=2e-3)
    lo, hi = ci(5, 72)
    assert lo < 5 / 72 < hi


def test_crossval_only_scores_pairs_of_held_out_people() -> None:
    rng = np.random.default_rng(0)
    samples = []
    for p in range(8):
        centre = rng.normal(size=128)
        centre *= 1.0 / np.linalg.norm(centre)
        for k in range(2):
            v = centre + rng.normal(scale=0.01, size=128)
            samples.append(Sample(f"p{p}", f"p{p}/{k}", v, v, False, ()))
    out = crossval(samples, folds=4, seed=0)
    counts = out["counts"]
    assert isinstance(counts, dict)
    assert counts["same"] == 8  # one same-person pair per person, each scored once, in its own fold
    assert counts["diff"] == 4 * 4  # 2 people per fold: 2x2 different-person pairs per fold
    assert counts.get("same_block_no_match", 0) == 0 and counts.get("diff_block_match", 0) == 0
