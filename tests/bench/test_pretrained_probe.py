"""The pretrained-feature probe of issue 9 (bench/pretrained_probe.py) and its backbone's TF-style padding: the
probe's weighting, its held-out protocol on made features (a planted cue is found, noise stays near chance)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from bench.imagenet_backbone import SameConv
from bench.pretrained_probe import OTHER_GENERATORS, _weights, auc, probe_scores


def _corpus(rng: np.random.Generator, signal: float, frames: int = 6) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """12 real clips and two clips of each other generator (their own sources); feature 0 is `signal` higher in
    every fake, the other 7 are noise; both variants."""
    infos: list[dict] = []
    for variant in ("original", "crf28"):
        infos += [{"variant": variant, "label": 0, "generator": "real", "source": f"r{i}"} for i in range(12)]
        infos += [{"variant": variant, "label": 1, "generator": g, "source": f"{g}{k}"}
                  for g in OTHER_GENERATORS for k in range(2)]  # fmt: skip
    owner = np.repeat(np.arange(len(infos)), frames)
    x = rng.normal(size=(len(owner), 8))
    x[:, 0] += signal * np.array([infos[o]["label"] for o in owner])
    return x, owner, infos


def test_weights_give_each_generator_and_each_real_source_the_same_share() -> None:
    _, owner, infos = _corpus(np.random.default_rng(0), 0.0)
    keep = ~((owner == 0) & (np.arange(len(owner)) % 2 == 0))  # one real clip with fewer frames than the others
    owner = owner[keep]
    w = _weights(infos, np.arange(len(infos)), owner)
    share: dict[str, float] = defaultdict(float)
    for wi, o in zip(w, owner, strict=True):
        share[infos[o]["generator"] if infos[o]["label"] else "real:" + infos[o]["source"]] += wi
    fake = [v for k, v in share.items() if not k.startswith("real:")]
    real = [v for k, v in share.items() if k.startswith("real:")]
    np.testing.assert_allclose(fake, fake[0])
    np.testing.assert_allclose(real, real[0])
    assert abs(sum(fake) - sum(real)) < 1e-9


def _mean_other_auc(signal: float, c: float) -> float:
    x, owner, infos = _corpus(np.random.default_rng(1), signal)
    s = probe_scores(x, owner, infos, c, "original")
    return float(np.mean([auc(s[g], s["real"]) for g in OTHER_GENERATORS]))


def test_probe_finds_a_cue_shared_by_every_generator() -> None:
    assert _mean_other_auc(3.0, 0.01) > 0.95
    assert _mean_other_auc(3.0, 0.0) > 0.9  # the nearest-neighbour probe too


def test_probe_on_noise_stays_near_chance() -> None:
    """Negative control: no feature differs, so held-out generators must not be separated."""
    assert abs(_mean_other_auc(0.0, 0.01) - 0.5) < 0.2


def test_same_padding_is_tensorflows() -> None:
    """Stride 2, kernel 3 on 4x4: TF pads one row and column at the bottom and right only."""
    conv = SameConv(1, 1, 3, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        y = conv(torch.ones(1, 1, 4, 4))
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert SameConv(1, 1, 5, stride=2)(torch.zeros(1, 1, 7, 9)).shape == (1, 1, 4, 5)
