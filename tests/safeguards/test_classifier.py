"""The shipped synthetic-clip classifier: loads, scores in [0, 1], separates our clips from real video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from generation import GenerationConfig, TalkingFaceGenerator, iter_video_frames, load_audio, load_image
from safeguards.classifier import FEATURE_NAMES, MIN_FRAMES, SyntheticClipClassifier, clip_features
from safeguards.detection import decide


@pytest.fixture(scope="module")
def classifier() -> SyntheticClipClassifier:
    return SyntheticClipClassifier.load_default()


def test_features_shape_and_finite() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(MIN_FRAMES)]
    f = clip_features(frames)
    assert f.shape == (len(FEATURE_NAMES),) and np.isfinite(f).all()
    with pytest.raises(ValueError, match="at least"):
        clip_features(frames[:3])


def test_still_image_gives_no_motion_evidence(classifier: SyntheticClipClassifier) -> None:
    score = classifier.score_frames([np.zeros((64, 64, 3), np.uint8)])
    assert score.score == 0.5 and score.windows == 0


def test_generated_clip_scores_above_real_video(
    classifier, example_photo: Path, example_audio: Path, shared_media: Path
) -> None:  # type: ignore[no-untyped-def]
    gen = TalkingFaceGenerator(GenerationConfig(size=256))
    frames = list(
        gen.frames(gen.prepare(load_image(example_photo, max_pixels=10**7)), load_audio(example_audio).head(2.6))
    )
    ours = classifier.score_frames(frames)
    real = classifier.score_frames(
        list(iter_video_frames(shared_media / "videos" / "talkinghead_woman_d10.mp4", max_frames=64))
    )
    assert 0.0 <= real.score <= 1.0 and 0.0 <= ours.score <= 1.0
    assert ours.score > real.score


def test_real_photo_filmed_handheld_is_not_flagged(classifier: SyntheticClipClassifier, example_photo: Path) -> None:
    """A still photo under a moving camera (fresh sensor noise each frame) must not look like our animation."""
    import random

    from bench.train_classifier import handheld

    frames = handheld(load_image(example_photo, max_pixels=10**7), 48, random.Random(3))
    assert not classifier.score_frames(frames).synthetic


def _evidence(
    found: bool = False, c2pa: bool = False, state: str | None = None, ai: bool = False, score: float = 0.1
) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    return (
        {
            "present": c2pa,
            "state": state,
            "ai_generated": ai,
            "signer": "x",
            "generation_id": "gen_1" if c2pa else None,
        },
        {"found": found, "payload": "0a0b0c0d" if found else None, "frames_agreeing": 0.9, "generation_id": "gen_1"},
        {"score": score, "threshold": 0.7},
    )


def test_verdicts() -> None:
    assert decide(*_evidence(found=True))[0] == "provatar-generated"
    assert decide(*_evidence(c2pa=True, state="Trusted", ai=True))[0] == "provatar-generated"
    # An untrusted manifest naming a generation is not proof it is ours, but it does claim AI.
    assert decide(*_evidence(c2pa=True, state="Valid", ai=True))[0] == "likely-synthetic"
    assert decide(*_evidence(score=0.95))[0] == "likely-synthetic"
    verdict, reasons = decide(*_evidence())
    assert verdict == "no-evidence" and any("no C2PA" in r for r in reasons)
    verdict, reasons = decide(*_evidence(c2pa=True, state="Invalid"))
    assert verdict == "no-evidence" and any("does not validate" in r for r in reasons)
