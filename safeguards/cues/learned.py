"""Learned cue: a small CNN on face crops of three consecutive frames (the middle frame and both differences).

The network (`safeguards.classifier.ClipNet`) sees what one-photo animation leaves in pixels: texture resampled
from one still in every frame, a painted mouth interior, frame-to-frame change that is a smooth warp of frozen
texture rather than fresh light and sensor noise. Its mean window logit is this cue's feature; the fusion decides
how much it counts for clips of unknown origin.
"""

from __future__ import annotations

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
        crops = np.stack([self.classifier.cropper.crops(t) for t in track.triplets])  # (N, 3, CROP, CROP)
        logits = self.classifier.logits(crops)
        z = float(logits.mean())
        evidence = {
            "model": self.classifier.name,
            "windows": len(logits),
            "mean_logit": round(z, 3),
            "window_logits": logits.round(2).tolist(),
        }
        return CueMeasurement(True, {"logit": float(np.clip(z, -20, 20))}, evidence)
