"""The learned cue's shipped any-generator model: small, loads without pickle, scores windows deterministically,
and its weights are the trained ones (it separates real from fake clips it was trained on)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from safeguards.classifier import CROP, MIN_FRAMES, SyntheticClipClassifier
from safeguards.learned_model import LEARNED_MODEL, load_learned_model


@pytest.fixture(scope="module")
def model() -> SyntheticClipClassifier:
    return load_learned_model()


def _model_path() -> Path:
    with resources.as_file(resources.files("safeguards") / "models" / LEARNED_MODEL) as p:
        return Path(p)


def test_shipped_model_is_small_and_loads_without_pickle(model: SyntheticClipClassifier) -> None:
    path = _model_path()
    assert path.stat().st_size < 20_000_000
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["input"] == f"face-crop-gray-triplet-{CROP}"
    # The honest figures travel with the weights: out-of-fold AUC per generator, both variants.
    assert set(meta["oof_auc"]) == {"original", "crf28"}
    assert model.name == "any-generator-cnn-v1"
    assert 0.5 <= model.threshold < 1.0
    assert model.probability(-10.0) <= model.probability(10.0)


def test_window_logits_have_the_right_shape_and_are_deterministic(model: SyntheticClipClassifier) -> None:
    crops = np.random.default_rng(3).integers(0, 256, (5, MIN_FRAMES, CROP, CROP), dtype=np.uint8)
    first = model.logits(crops)
    assert first.shape == (5,) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, model.logits(crops))
    # Each window is scored on its own: a batch gives what the windows give one by one.
    np.testing.assert_allclose(model.logits(crops[1:2]), first[1:2], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.shared_media
def test_trained_weights_separate_training_clips(model: SyntheticClipClassifier, shared_media: Path) -> None:
    """Real footage scores below other generators' output. These clips were in the training set, so this checks
    that the shipped weights are the trained ones, not generalisation (bench/RESULTS.md has the held-out AUC)."""
    real = [shared_media / "videos_real" / "woman_sitting_coffee_s29.mp4",
            shared_media / "videos_real" / "woman_beauty_filter_d14.mp4"]  # fmt: skip
    fake = [shared_media / "synthetic" / "vasa1__13_gt.mp4", shared_media / "synthetic" / "emo__talk_mola_gt.mp4"]
    score = {p.name: model.score_video(p).score for p in real + fake}
    assert max(score[p.name] for p in real) < min(score[p.name] for p in fake), score
