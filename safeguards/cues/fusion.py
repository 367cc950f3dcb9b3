"""Fuse the cues into one calibrated probability, and say how much each cue contributed.

Two stages, both plain logistic regressions (few, interpretable weights: there are tens of training clips, not
thousands):

1. per cue: standardised features -> the cue's own logit (its score in the report is sigmoid of that);
2. stacking: the cue logits -> the fused logit. Each cue's contribution is its weight times its logit; a cue that
   does not apply contributes 0. The stacking stage is fitted on out-of-fold cue logits (folds grouped by generator
   and by source footage), so it learns how far each cue can be trusted on material it was not fitted on.

Classes are weighted equally, so the probability is calibrated for an even prior (as likely fake as real).
The threshold and its expected false-positive rate come from real clips scored by models that never saw them
(`threshold_from_real`: split-conformal, at a stated target false-positive rate).
The model is a small JSON file shipped in the package (`safeguards/models/detector_fusion_v1.json`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.cues.base import CueMeasurement, CueResult

__all__ = [
    "CueModel",
    "FusionModel",
    "FusedScore",
    "Row",
    "fit_fusion",
    "renderer_specialist",
    "threshold_from_real",
    "fpr_interval",
    "DEFAULT_FUSION",
    "TARGET_FPR",
]

DEFAULT_FUSION = "detector_fusion_v1.json"


@dataclass
class Row:
    """One training clip: per cue, its features (only the cues that applied), the label, and its groups."""

    cues: dict[str, dict[str, float]]
    label: int
    group: str  # what is held out together: the generator for fakes, the source footage for real clips


@dataclass
class CueModel:
    """logit = intercept + sum_j coef_j * clip((x_j - center_j) / scale_j, -clip, clip)."""

    features: list[str]
    mean: list[float]  # centre of each feature (the real clips' median for invariant cues)
    scale: list[float]
    coef: list[float]
    intercept: float
    clip: float = 4.0
    kept_because: dict[str, str] = field(default_factory=dict)

    def logit(self, feats: Mapping[str, float]) -> float:
        x = np.array([feats.get(f, m) for f, m in zip(self.features, self.mean, strict=True)], dtype=np.float64)
        x = np.where(np.isfinite(x), x, self.mean)
        z = np.clip((x - np.array(self.mean)) / np.array(self.scale), -self.clip, self.clip)
        return float(np.clip(np.dot(z, self.coef) + self.intercept, -12.0, 12.0))


@dataclass
class FusedScore:
    probability: float
    logit: float
    threshold: float
    expected_fpr: float
    cues: list[CueResult]
    held_out_auc: float | None = None  # mean AUC on generators held out in validation (bench/eval_detector.py)


@dataclass
class FusionModel:
    version: str
    cues: dict[str, CueModel]
    weights: dict[str, float]
    intercept: float
    threshold: float
    expected_fpr: float
    notes: dict[str, Any] = field(default_factory=dict)
    # Detectors of one known generator (our renderer's CNN): name -> {"feature", "a", "b"}, their own Platt
    # calibration. They are not stacked with the general cues (out of fold they never fire, and below their
    # threshold they say nothing about other generators); the fused logit is the larger of theirs and the stack's.
    specialists: dict[str, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ scoring
    def fuse(self, measured: Mapping[str, CueMeasurement]) -> FusedScore:
        results: list[CueResult] = []
        z = self.intercept
        special: dict[str, float] = {}
        for name, m in measured.items():
            spec = self.specialists.get(name)
            model = self.cues.get(name)
            if not m.applies:
                results.append(CueResult(name, False, None, 0.0, m.features, m.evidence, m.reason))
                continue
            if model is None and spec is None:
                # Measured and shown, but no feature of it held across the training generators: no weight.
                why = "measured; not used by the fusion (no feature of it held across the training generators)"
                results.append(CueResult(name, True, None, 0.0, m.features, m.evidence, why))
                continue
            if spec is not None:
                special[name] = spec["a"] * m.features[spec["feature"]] + spec["b"]
                results.append(CueResult(name, True, _sigmoid(special[name]), 0.0, m.features, m.evidence, m.reason))
                continue
            assert model is not None
            zc = model.logit(m.features)
            contribution = self.weights.get(name, 0.0) * zc
            z += contribution
            results.append(CueResult(name, True, _sigmoid(zc), contribution, m.features, m.evidence, m.reason))
        final = max([z, *special.values()])
        if final > z:  # a specialist recognised its generator: its lift over the stack is its contribution
            top = max(special, key=lambda n: special[n])
            results = [replace(r, contribution=final - z) if r.name == top else r for r in results]
        auc = self.notes.get("held_out_mean_auc_other_generators")
        return FusedScore(_sigmoid(final), final, self.threshold, self.expected_fpr, results, auc)

    def cue_logits(self, row_cues: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        return {n: self.cues[n].logit(f) for n, f in row_cues.items() if n in self.cues}

    def probability(self, row_cues: Mapping[str, Mapping[str, float]]) -> float:
        zs = self.cue_logits(row_cues)
        z = self.intercept + sum(self.weights.get(n, 0.0) * v for n, v in zs.items())
        for n, spec in self.specialists.items():
            if n in row_cues and spec["feature"] in row_cues[n]:
                z = max(z, spec["a"] * row_cues[n][spec["feature"]] + spec["b"])
        return _sigmoid(z)

    # ------------------------------------------------------------------------------------------------ storage
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FusionModel:
        d = json.loads(text)
        d["cues"] = {k: CueModel(**v) for k, v in d["cues"].items()}
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        return cls.from_json(Path(path).read_text())

    @classmethod
    def load_default(cls) -> FusionModel:
        return cls.from_json((resources.files("safeguards") / "models" / DEFAULT_FUSION).read_text())


def renderer_specialist() -> dict[str, dict[str, Any]]:
    """Our renderer's CNN as a specialist: the learned cue's raw logit through the CNN's own Platt calibration."""
    from safeguards.classifier import SyntheticClipClassifier

    clf = SyntheticClipClassifier.load_default()
    return {"learned": {"feature": "logit", "a": clf.platt_a, "b": clf.platt_b, "model": clf.name}}


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


MIN_AGREEMENT = 0.7  # share of training generators whose fakes must differ from real in the same direction
MIN_EFFECT = 0.08  # mean |AUC - 0.5| over those generators


def balanced_weights(rows: Sequence[Row]) -> np.ndarray:
    """Half the weight to real clips, half to fakes split equally between generators (then within each): no
    generator with many clips (ours) can dominate what "fake" means."""
    fake_groups = sorted({r.group for r in rows if r.label})
    n_real = sum(1 for r in rows if not r.label)
    size = {g: sum(1 for r in rows if r.group == g) for g in fake_groups}
    w = [0.5 / max(n_real, 1) if not r.label else 0.5 / (len(fake_groups) * size[r.group]) for r in rows]
    return np.array(w) * len(rows)


def _logreg(x: np.ndarray, y: np.ndarray, c: float, w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        return np.zeros(x.shape[1]), 0.0
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit(x, y, sample_weight=w)
    return lr.coef_[0], float(lr.intercept_[0])


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half)."""
    if not len(pos) or not len(neg):
        return 0.5
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def fit_cue(rows: Sequence[Row], name: str, c: float) -> CueModel | None:
    """The cue's own model, or None when nothing about it holds across the training generators.

    Invariant cues: keep only the features whose fakes differ from the real clips in the same direction for most
    training generators (an effect seen in one generator is that generator's fingerprint, not a cue); centre and
    scale them on the real clips (median, MAD), orient them, clip outliers, average, and calibrate that average with
    a one-dimensional logistic regression under generator-balanced weights. Few, signed, equally weighted features
    generalise where a free regression on tens of clips would fit noise.
    """
    have = [r for r in rows if name in r.cues]
    if len(have) < 6 or len({r.label for r in have}) < 2:
        return None
    feats = sorted({f for r in have for f in r.cues[name]})
    x = np.array([[r.cues[name].get(f, np.nan) for f in feats] for r in have], dtype=np.float64)
    x = np.where(np.isfinite(x), x, np.nanmedian(x, axis=0))
    y = np.array([r.label for r in have])
    w = balanced_weights(have)
    real = x[y == 0]
    centre = np.median(real, axis=0)
    scale = 1.4826 * np.median(np.abs(real - centre), axis=0)
    scale = np.maximum(scale, 0.1 * x.std(0) + 1e-6)
    groups = sorted({r.group for r in have if r.label})
    kept, signs, why = [], [], {}
    for j, f in enumerate(feats):
        aucs = np.array([_auc(x[[r.group == g for r in have], j], real[:, j]) for g in groups])
        effect = aucs - 0.5
        direction = np.sign(effect.mean()) or 1.0
        agree = float(np.mean(np.sign(effect) == direction))
        if len(groups) >= 3 and agree >= MIN_AGREEMENT and float(np.abs(effect).mean()) >= MIN_EFFECT:
            kept.append(j)
            signs.append(direction)
            why[f] = f"{'higher' if direction > 0 else 'lower'} in fakes for {agree:.0%} of {len(groups)} generators"
    if not kept:
        return None
    z = np.clip((x[:, kept] - centre[kept]) / scale[kept], -4, 4) @ (np.array(signs) / len(kept))
    a, b = _logreg(z[:, None], y, c, w)
    coef = (a[0] * np.array(signs) / len(kept)).tolist()
    return CueModel([feats[j] for j in kept], centre[kept].tolist(), scale[kept].tolist(), coef, b, 4.0, why)


def _fit_cues(rows: Sequence[Row], names: Sequence[str], c: float) -> dict[str, CueModel]:
    out = {}
    for n in names:
        m = fit_cue(rows, n, c)
        if m is not None:
            out[n] = m
    return out


def _oof_logits(rows: Sequence[Row], names: Sequence[str], c: float, folds: int) -> np.ndarray:
    """(N, cues) cue logits of each row from cue models fitted without the row's group (grouped K-fold)."""
    groups = sorted({r.group for r in rows})
    fold_of = {g: i % folds for i, g in enumerate(groups)}
    z = np.zeros((len(rows), len(names)))
    for k in range(folds):
        train = [r for r in rows if fold_of[r.group] != k]
        models = _fit_cues(train, names, c)
        for i, r in enumerate(rows):
            if fold_of[r.group] != k:
                continue
            for j, n in enumerate(names):
                if n in models and n in r.cues:
                    z[i, j] = models[n].logit(r.cues[n])
    return z


# The false-positive rate the shipped threshold aims at. With n held-out real clips the smallest reachable rate is
# 1/(n+1) (threshold above all of them): 1/15 with the shared set's 14, so today the rule is "above every real clip".
TARGET_FPR = 0.05


def threshold_from_real(real_scores: Sequence[float], target_fpr: float = TARGET_FPR) -> tuple[float, float]:
    """Threshold from held-out real scores at a target false-positive rate, and the rate a new real clip meets.

    Split-conformal: for n real scores exchangeable with a new real clip's, the new one lands above the k-th
    highest with probability k/(n+1). The threshold sits just above the k-th highest, k = floor(target (n+1)),
    at least 1 (with few real clips the target is out of reach and the threshold goes above all of them). The
    returned rate is (m+1)/(n+1), m the real scores at or above the threshold: exact in expectation when the
    threshold is where k put it, an upper bound when the 0.5 floor or the 0.99 cap moved it. Why not the share of
    real scores above it: that share is what the rule was fitted to, and evaluated on clips it did not see the
    same rule flags k of n, not k-1 (`fpr_interval` gives the spread).
    """
    s = sorted((float(v) for v in real_scores), reverse=True)
    if not s:
        return 0.5, float("nan")
    k = min(max(1, int(math.floor(target_fpr * (len(s) + 1)))), len(s))
    # Just above the k-th highest (a visible margin, but never past the (k-1)-th: that would change k).
    margin = 1e-3 if k == 1 else min(1e-3, (s[k - 2] - s[k - 1]) / 2)
    threshold = min(max(0.5, s[k - 1] + margin), 0.99)
    at_or_above = sum(v >= threshold for v in s)
    return float(threshold), (at_or_above + 1) / (len(s) + 1)


def fpr_interval(real_scores: Sequence[float], threshold: float, level: float = 0.9) -> tuple[float, float]:
    """Central ``level`` interval of the false-positive rate the fixed calibration set leaves a new real clip:
    Beta(m+1, n-m), m of the n real scores at or above ``threshold`` (the split-conformal coverage law)."""
    from scipy.stats import beta

    n = len(real_scores)
    m = sum(float(v) >= threshold for v in real_scores)
    lo, hi = beta.ppf([(1 - level) / 2, (1 + level) / 2], m + 1, max(n - m, 1))
    return float(lo), float(hi)


def fit_fusion(
    rows: Sequence[Row],
    *,
    cue_c: float = 0.3,
    stack_c: float = 0.5,
    folds: int = 6,
    real_scores: Sequence[float] | None = None,
    target_fpr: float = TARGET_FPR,
    version: str = "detector-fusion-v1",
    notes: dict[str, Any] | None = None,
    specialists: dict[str, dict[str, Any]] | None = None,
) -> FusionModel:
    """Fit the per-cue models on all rows and the stacking weights on out-of-fold cue logits.

    ``real_scores`` are probabilities of real clips scored by models that never saw them (the caller's
    leave-one-source-out loop); the threshold and its expected false-positive rate come from them at
    ``target_fpr`` (`threshold_from_real`). Without them the threshold is 0.5.
    """
    specialists = specialists or {}
    names = sorted({n for r in rows for n in r.cues} - set(specialists))
    cues = _fit_cues(rows, names, cue_c)
    names = [n for n in names if n in cues]
    z = _oof_logits(rows, names, cue_c, folds)
    y = np.array([r.label for r in rows])
    w, b = _logreg(z, y, stack_c, balanced_weights(rows))
    # A cue that points the wrong way out of fold is not trusted at all (its weight would only fit noise).
    w = np.maximum(w, 0.0)
    threshold, fpr = 0.5, float("nan")
    if real_scores is not None and len(real_scores) >= 2:
        threshold, fpr = threshold_from_real(real_scores, target_fpr)
    return FusionModel(
        version=version,
        cues=cues,
        weights={n: float(v) for n, v in zip(names, w, strict=True)},
        intercept=b,
        threshold=float(threshold),
        expected_fpr=fpr,
        notes=notes or {},
        specialists=specialists,
    )
