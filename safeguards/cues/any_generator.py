"""Learned cue for any generator: the same small CNN shape as the renderer's (face crops of three consecutive
frames), trained by `bench/train_learned_cue.py` on real footage against every fake source of the detector corpus
(other generators, our renders, classic manipulations) with heavy augmentation. Its mean window logit is the
feature; like every general cue it counts only as far as the fusion's held-out fit trusts it."""

from __future__ import annotations

import numpy as np

from safeguards.classifier import SyntheticClipClassifier
from safeguards.cues.base import CueMeasurement
from safeguards.cues.track import FaceTrack


class AnyGeneratorCue:
    name = "any_generator_cnn"
    description = "CNN trained on real footage against many generators' fakes (face crops, consecutive frames)"

    def __init__(self, model: SyntheticClipClassifier) -> None:
        self.model = model

    def measure(self, track: FaceTrack) -> CueMeasurement:
        if not track.triplets:
            return CueMeasurement(False, reason="needs consecutive video frames")
        logits = self.model.logits(track.window_crops())  # crops cut once per track, shared by the CNN cues
        z = float(np.clip(logits.mean(), -20, 20))
        evidence = {"model": self.model.name, "windows": len(logits), "mean_logit": round(z, 3),
                    "probability": round(self.model.probability(z), 4)}  # fmt: skip
        return CueMeasurement(True, {"logit": z}, evidence)
