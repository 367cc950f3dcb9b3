"""The learned cue's shipped model: `ClipNet` trained on real footage against every fake source in the detector
corpus (other generators' talking heads, our renders, classic swaps / mouth edits / frame interpolation), with heavy
augmentation, by `bench/train_learned_cue.py`.

It keeps the classifier's input (face-centred grey crops of three consecutive frames) and file format (.npz read
with allow_pickle=False), so it is a `SyntheticClipClassifier`: `load_learned_model().logits(triplets)` gives one
logit per window, `.cropper.crops(frames)` cuts a window, and `.probability(mean_logit)` is Platt-calibrated on
out-of-fold logits (held-out generators and held-out real sources).
"""

from __future__ import annotations

from importlib import resources

import torch

from safeguards.classifier import SyntheticClipClassifier

__all__ = ["LEARNED_MODEL", "load_learned_model"]

LEARNED_MODEL = "any_generator_cnn_v1.npz"


def load_learned_model(*, device: str | torch.device = "cpu") -> SyntheticClipClassifier:
    """The shipped any-generator model (package data under safeguards/models/)."""
    with resources.as_file(resources.files("safeguards") / "models" / LEARNED_MODEL) as path:
        return SyntheticClipClassifier.load(path, device=device)
