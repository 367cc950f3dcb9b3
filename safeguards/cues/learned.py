"""Learned cue: a small CNN on face crops of three consecutive frames (the middle frame and both differences).

The renderer network (`safeguards.classifier.ClipNet`, trained on our own renders) sees what our one-photo
animation leaves in pixels: texture resampled from one still in every frame, a painted mouth interior,
frame-to-frame change that is a smooth warp of frozen texture rather than fresh light and sensor noise. It knows
one renderer, so its evidence is one-sided (see `measure`).
"""

from __future__ import annotations

import math

import numpy as np

from safeguards.classifier import SyntheticClipClassifier
from safeguards.cues.base import CueMeasurement
from safeguards.cues.track import FaceTrack


class LearnedCue:
    name = "learned"
    description = "CNN on face crops of consecutive frames (texture resampling, painted interiors, frozen texture)"

    def __init__(self, classifier: SyntheticClipClassifier) -> None:
        self.classifier = classifier

    def measure(self, track: FaceTrack) -> CueMeasurement:
        if not track.triplets:
            return CueMeasurement(False, reason="needs consecutive video frames")
        logits = self.classifier.logits(track.window_crops())  # crops cut once per track, shared by the CNN cues
        z = float(logits.mean())
        p = self.classifier.probability(z)
        # One-sided: this CNN knows one renderer (ours). Above its threshold it is strong evidence; below it, it
        # says nothing about other generators, so it must not count as evidence of "real".
        calibrated = self.classifier.platt_a * z + self.classifier.platt_b
        at_threshold = math.log(self.classifier.threshold / (1 - self.classifier.threshold))
        evidence = {
            "model": self.classifier.name,
            "windows": len(logits),
            "mean_logit": round(z, 3),
            "renderer_probability": round(p, 4),
            "window_logits": logits.round(2).tolist(),
        }
        features = {"renderer_evidence": float(np.clip(calibrated - at_threshold, 0.0, 20.0)), "logit": z}
        return CueMeasurement(True, features, evidence)
