"""Fuse the cues into one calibrated probability, and say how much each cue contributed.

Two stages, both plain logistic regressions (few, interpretable weights: there are tens of training clips, not
thousands):

1. per cue: standardised features -> the cue's own logit (its score in the report is sigmoid of that);
2. stacking: the cue logits -> the fused logit. Each cue's contribution is its weight times its logit; a cue that
   does not apply contributes 0. The stacking stage is fitted on out-of-fold cue logits (folds grouped by generator
   and by source footage), so it learns how far each cue can be trusted on material it was not fitted on.

Classes are weighted equally, so the probability is calibrated for an even prior (as likely fake as real).
The threshold and its expected false-positive rate come from real clips scored by models that never saw them.
The model is a small JSON file shipped in the package (`safeguards/models/detector_fusion_v1.json`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from safeguards.cues.base import CueMeasurement, CueResult

__all__ = ["CueModel", "FusionModel", "FusedScore", "Row", "fit_fusion", "DEFAULT_FUSION"]

DEFAULT_FUSION = "detector_fusion_v1.json"


@dataclass
class Row:
    """One training clip: per cue, its features (only the cues that applied), the label, and its groups."""

    cues: dict[str, dict[str, float]]
    label: int
    group: str  # what is held out together: the generator for fakes, the source footage for real clips


@dataclass
class CueModel:
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float

    def logit(self, feats: Mapping[str, float]) -> float:
        x = (np.array([feats.get(f, m) for f, m in zip(self.features, self.mean, strict=True)]) - self.mean)
        z = float(np.dot(x / np.array(self.scale), self.coef) + self.intercept)
        return float(np.clip(z, -12.0, 12.0))


@dataclass
class FusedScore:
    probability: float
    logit: float
    threshold: float
    expected_fpr: float
    cues: list[CueResult]


@dataclass
class FusionModel:
    version: str
    cues: dict[str, CueModel]
    weights: dict[str, float]
    intercept: float
    threshold: float
    expected_fpr: float
    notes: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------ scoring
    def fuse(self, measured: Mapping[str, CueMeasurement]) -> FusedScore:
        results: list[CueResult] = []
        z = self.intercept
        for name, m in measured.items():
            model = self.cues.get(name)
            if not m.applies or model is None:
                results.append(CueResult(name, False, None, 0.0, m.features, m.evidence, m.reason or "not modelled"))
                continue
            zc = model.logit(m.features)
            contribution = self.weights.get(name, 0.0) * zc
            z += contribution
            results.append(CueResult(name, True, _sigmoid(zc), contribution, m.features, m.evidence, m.reason))
        return FusedScore(_sigmoid(z), z, self.threshold, self.expected_fpr, results)

    def cue_logits(self, row_cues: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        return {n: self.cues[n].logit(f) for n, f in row_cues.items() if n in self.cues}

    def probability(self, row_cues: Mapping[str, Mapping[str, float]]) -> float:
        zs = self.cue_logits(row_cues)
        return _sigmoid(self.intercept + sum(self.weights.get(n, 0.0) * z for n, z in zs.items()))

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


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))


def _logreg(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        return np.zeros(x.shape[1]), 0.0
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    lr.fit(x, y)
    return lr.coef_[0], float(lr.intercept_[0])


def fit_cue(rows: Sequence[Row], name: str, c: float) -> CueModel | None:
    have = [r for r in rows if name in r.cues]
    if len(have) < 6 or len({r.label for r in have}) < 2:
        return None
    feats = sorted(have[0].cues[name])
    x = np.array([[r.cues[name].get(f, 0.0) for f in feats] for r in have], dtype=np.float64)
    y = np.array([r.label for r in have])
    mean, scale = x.mean(0), x.std(0) + 1e-6
    coef, b = _logreg((x - mean) / scale, y, c)
    return CueModel(feats, mean.tolist(), scale.tolist(), coef.tolist(), b)


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


def fit_fusion(
    rows: Sequence[Row],
    *,
    cue_c: float = 0.3,
    stack_c: float = 0.5,
    folds: int = 6,
    real_scores: Sequence[float] | None = None,
    version: str = "detector-fusion-v1",
    notes: dict[str, Any] | None = None,
) -> FusionModel:
    """Fit the per-cue models on all rows and the stacking weights on out-of-fold cue logits.

    ``real_scores`` are probabilities of real clips scored by models that never saw them (the caller's
    leave-one-source-out loop); the threshold is set just above the second highest, so at most one of them is
    flagged, and the expected false-positive rate is the share at or above it. Without them the threshold is 0.5.
    """
    names = sorted({n for r in rows for n in r.cues})
    cues = _fit_cues(rows, names, cue_c)
    names = [n for n in names if n in cues]
    z = _oof_logits(rows, names, cue_c, folds)
    y = np.array([r.label for r in rows])
    w, b = _logreg(z, y, stack_c)
    # A cue that points the wrong way out of fold is not trusted at all (its weight would only fit noise).
    w = np.maximum(w, 0.0)
    threshold, fpr = 0.5, float("nan")
    if real_scores is not None and len(real_scores) >= 2:
        s = sorted(real_scores, reverse=True)
        threshold = min(max(0.5, s[1] + 1e-3), 0.99)
        fpr = float(np.mean(np.array(real_scores) >= threshold))
    return FusionModel(
        version=version,
        cues=cues,
        weights={n: float(v) for n, v in zip(names, w, strict=True)},
        intercept=b,
        threshold=float(threshold),
        expected_fpr=fpr,
        notes=notes or {},
    )
