"""The learned cue's training: folds never let a held-out clip's generator or person into training; augmentation
keeps the window's shape and is reproducible."""

from __future__ import annotations

import numpy as np

from bench.train_learned_cue import ClipInfo, augment, make_folds
from safeguards.classifier import CROP


def _corpus() -> list[ClipInfo]:
    """Like the detector corpus: real clips, fakes of other generators, fakes made from real clips (same person),
    a swap whose donor photo our renderer also animates, both variants of everything."""
    clips = []
    for variant in ("original", "crf28"):
        for r in "abcdefgh":
            clips.append(ClipInfo(f"{variant}/real/{r}", variant, 0, "real", r, (r,)))
        for g in ("emo", "vasa1", "musev", "dfdc"):
            for k in range(2):
                clips.append(ClipInfo(f"{variant}/{g}/{k}", variant, 1, g, f"{g}{k}", (f"{g}{k}",)))
        clips.append(ClipInfo(f"{variant}/hyperlips/a", variant, 1, "hyperlips", "a", ("a",)))
        clips.append(ClipInfo(f"{variant}/classic_mouth/b", variant, 1, "classic_mouth", "b", ("b",)))
        clips.append(ClipInfo(f"{variant}/classic_swap/c", variant, 1, "classic_swap", "c", ("c", "photo")))
        clips.append(ClipInfo(f"{variant}/provatar/photo", variant, 1, "provatar", "photo", ("photo",)))
    return clips


def test_every_clip_is_held_out_once_and_never_trained_on_with_its_generator_or_person() -> None:
    clips = _corpus()
    folds = make_folds(clips, 3, seed=0)
    tested = sorted(i for _, test in folds for i in test)
    assert tested == list(range(len(clips)))
    for train, test in folds:
        assert not train & test
        held_generators = {clips[i].generator for i in test if clips[i].label == 1}
        held_people = {s for i in test for s in clips[i].links}
        for i in train:
            assert clips[i].generator not in held_generators or clips[i].label == 0
            assert not held_people & set(clips[i].links), (clips[i], held_people)
        # Real and fake both remain to learn from.
        assert {clips[i].label for i in train} == {0, 1}


def test_augmentation_keeps_the_window_and_is_reproducible() -> None:
    trip = np.random.default_rng(0).integers(0, 256, (3, CROP, CROP), dtype=np.uint8)
    outs = [augment(trip, np.random.default_rng(7)) for _ in range(2)]
    assert outs[0].shape == (3, CROP, CROP) and outs[0].dtype == np.uint8
    np.testing.assert_array_equal(outs[0], outs[1])
    varied = [augment(trip, np.random.default_rng(s)) for s in range(8)]
    assert any(not np.array_equal(v, trip) for v in varied)
