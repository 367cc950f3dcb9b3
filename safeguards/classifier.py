"""A small trained classifier that scores how likely a clip is synthetic (a face animated from one still photo).

It looks only at pixels, never at metadata or the watermark, so it still works on a re-encoded, stripped copy.
v1 uses hand-designed temporal-forensics features (one-photo animation leaves the background frozen while the face
moves, and repeats the same sensor-noise pattern in every frame) and a logistic regression trained by
`bench/train_classifier.py` on our own generator's clips against real talking-head video and real photos given
natural camera motion. Weights are a small JSON file shipped in the package.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

FEATURE_NAMES = (
    "log_border_motion",
    "log_center_motion",
    "center_to_border_motion",
    "static_border_share",
    "static_center_share",
    "noise_residual_corr_border",
    "noise_residual_corr_center",
    "global_shift",
    "shift_jitter",
    "log_noise_level",
)
MIN_FRAMES = 8
ANALYSIS_SIZE = 160
DEFAULT_MODEL = "synthetic_clip_v1.json"


def _gray_small(frame_rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (ANALYSIS_SIZE, ANALYSIS_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    b = int(size * 0.14)
    border = (yy < b) | (yy >= size - b) | (xx < b) | (xx >= size - b)
    c0, c1 = int(size * 0.3), int(size * 0.7)
    center = (yy >= c0) & (yy < c1) & (xx >= c0) & (xx < c1)
    return border, center


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum())) + 1e-6
    return float((a * b).sum() / den)


def clip_features(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Temporal-forensics features of consecutive RGB frames.

    Args:
        frames: at least MIN_FRAMES consecutive RGB uint8 frames (any size; analysed at 160x160 grey).
    Returns:
        (len(FEATURE_NAMES),) float64 feature vector.
    """
    if len(frames) < MIN_FRAMES:
        raise ValueError(f"need at least {MIN_FRAMES} frames, got {len(frames)}")
    g = np.stack([_gray_small(f) for f in frames])  # (T, S, S)
    border, center = _masks(ANALYSIS_SIZE)
    diff = np.abs(np.diff(g, axis=0))  # (T-1, S, S)
    db, dc = diff[:, border], diff[:, center]
    # Noise residual: the frame minus its blur; one-photo animation keeps the same residual frame to frame.
    resid = np.stack([f - cv2.GaussianBlur(f, (0, 0), 1.2) for f in g])  # (T, S, S)
    rb = [_corr(resid[t][border], resid[t + 1][border]) for t in range(len(g) - 1)]
    rc = [_corr(resid[t][center], resid[t + 1][center]) for t in range(len(g) - 1)]
    shifts = []
    win = cv2.createHanningWindow((ANALYSIS_SIZE, ANALYSIS_SIZE), cv2.CV_32F)
    for t in range(len(g) - 1):
        (sx, sy), _ = cv2.phaseCorrelate(g[t], g[t + 1], win)
        shifts.append(math.hypot(sx, sy))
    shifts_a = np.asarray(shifts)
    return np.array(
        [
            math.log(float(db.mean()) + 1e-3),
            math.log(float(dc.mean()) + 1e-3),
            math.log((float(dc.mean()) + 1e-3) / (float(db.mean()) + 1e-3)),
            float((db < 0.75).mean()),
            float((dc < 0.75).mean()),
            float(np.median(rb)),
            float(np.median(rc)),
            float(np.median(shifts_a)),
            float(shifts_a.std()),
            math.log(float(np.abs(resid).mean()) + 1e-3),
        ],
        dtype=np.float64,
    )


@dataclass(frozen=True)
class ClassifierScore:
    score: float  # calibrated probability that the clip is synthetic
    threshold: float
    windows: int
    model: str

    @property
    def synthetic(self) -> bool:
        return self.score >= self.threshold


class SyntheticClipClassifier:
    """Logistic regression over `clip_features`, applied to sliding windows and averaged in logit space."""

    def __init__(
        self,
        *,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: float,
        threshold: float,
        window: int,
        name: str,
    ) -> None:
        self.mean, self.scale, self.coef = mean, scale, coef
        self.intercept, self.threshold, self.window, self.name = intercept, threshold, window, name

    @classmethod
    def load(cls, path: Path) -> SyntheticClipClassifier:
        data = json.loads(Path(path).read_text())
        if tuple(data["features"]) != FEATURE_NAMES:
            raise ValueError(f"{path}: model was trained on other features")
        return cls(
            mean=np.asarray(data["mean"]),
            scale=np.asarray(data["scale"]),
            coef=np.asarray(data["coef"]),
            intercept=float(data["intercept"]),
            threshold=float(data["threshold"]),
            window=int(data["window"]),
            name=str(data["name"]),
        )

    @classmethod
    def load_default(cls) -> SyntheticClipClassifier:
        with resources.as_file(resources.files("safeguards") / "models" / DEFAULT_MODEL) as p:
            return cls.load(p)

    def logit(self, features: np.ndarray) -> float:
        return float(((features - self.mean) / self.scale) @ self.coef + self.intercept)

    def score_frames(self, frames: Sequence[np.ndarray]) -> ClassifierScore:
        """Score consecutive frames. A still image (or fewer than MIN_FRAMES) has no motion evidence: 0.5."""
        if len(frames) < MIN_FRAMES:
            return ClassifierScore(0.5, self.threshold, 0, self.name)
        step = self.window
        starts = list(range(0, max(1, len(frames) - step + 1), step)) or [0]
        logits = [
            self.logit(clip_features(frames[s : s + step])) for s in starts if len(frames[s : s + step]) >= MIN_FRAMES
        ]
        z = float(np.mean(logits))
        return ClassifierScore(1.0 / (1.0 + math.exp(-z)), self.threshold, len(logits), self.name)
