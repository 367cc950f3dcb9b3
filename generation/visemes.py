"""Audio -> lip shapes per video frame, before calibration: from recognised phones or from acoustics alone.

Two paths produce the same ``LipTrack``:
- ``lips_from_phones``: each ARPAbet phone has a viseme target (opening, width, rounding, lower-lip tuck, closure)
  and a dominance; neighbouring targets blend by dominance functions (Cohen & Massaro 1993), which decay more
  slowly before a phone than after it, so the lips anticipate the next sound (~60 ms) and consonants that do not
  need the lips (t, k, s) take their shape from the neighbouring vowels ("t" in "two" is rounded). How far they
  open follows the opening heard in the audio, so stress and a misrecognised vowel still show.
- ``lips_from_acoustics``: language-independent, from loudness, voicing, formant proxies and short energy dips
  (stop closures); used for other languages, singing and music.
``openness`` is in arbitrary units; ``generation.motion`` calibrates it to the real-video inner-lip gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generation.audio_features import AudioFeatures
from generation.phonemes import SILENCE_PHONES, PhoneTranscript

__all__ = ["Viseme", "VISEMES", "LipTrack", "CoarticulationConfig", "lips_from_phones", "lips_from_acoustics"]


@dataclass(frozen=True)
class Viseme:
    """Lip target of one phone. openness ~ jaw/lip opening of the sound (0 closed .. 1 "aa");
    width -1..1 (spread "ee" > 0, pursed < 0); rounding 0..1; lower_lip 0..1 (lower lip tucked under the upper
    teeth, f/v); closed: the lips must meet (p/b/m); dominance: how strongly the phone holds its shape against
    its neighbours (weak for sounds made inside the mouth)."""

    openness: float
    width: float = 0.0
    rounding: float = 0.0
    lower_lip: float = 0.0
    closed: bool = False
    dominance: float = 1.0


_BILABIAL = Viseme(0.0, closed=True, dominance=6.0)
_LABIODENTAL = Viseme(0.08, lower_lip=1.0, dominance=3.0)
_ALVEOLAR = Viseme(0.22, width=0.2, dominance=0.35)
_POSTALVEOLAR = Viseme(0.22, width=-0.3, rounding=0.6, dominance=1.2)
_VELAR = Viseme(0.3, dominance=0.3)

VISEMES: dict[str, Viseme] = {
    "P": _BILABIAL, "B": _BILABIAL, "M": _BILABIAL,
    "F": _LABIODENTAL, "V": _LABIODENTAL,
    "TH": Viseme(0.2, width=0.1, dominance=1.0), "DH": Viseme(0.18, width=0.1, dominance=0.8),
    "T": _ALVEOLAR, "D": _ALVEOLAR, "N": _ALVEOLAR, "L": Viseme(0.28, dominance=0.4),
    "S": Viseme(0.12, width=0.4, dominance=0.8), "Z": Viseme(0.12, width=0.4, dominance=0.8),
    "SH": _POSTALVEOLAR, "ZH": _POSTALVEOLAR, "CH": _POSTALVEOLAR, "JH": _POSTALVEOLAR,
    "K": _VELAR, "G": _VELAR, "NG": _VELAR, "HH": Viseme(0.35, dominance=0.2), "Y": Viseme(0.2, width=0.5),
    "R": Viseme(0.2, width=-0.3, rounding=0.5, dominance=0.9),
    "W": Viseme(0.08, width=-0.7, rounding=1.0, dominance=2.0),
    "AA": Viseme(1.0), "AE": Viseme(0.85, width=0.4), "AH": Viseme(0.65), "AO": Viseme(0.8, rounding=0.6, width=-0.3),
    "AW": Viseme(0.8, rounding=0.3), "AY": Viseme(0.85, width=0.2), "EH": Viseme(0.6, width=0.4),
    "ER": Viseme(0.35, rounding=0.4, width=-0.2), "EY": Viseme(0.5, width=0.6), "IH": Viseme(0.4, width=0.5),
    "IY": Viseme(0.25, width=0.9), "OW": Viseme(0.55, rounding=0.9, width=-0.5), "OY": Viseme(0.6, rounding=0.7),
    "UH": Viseme(0.35, rounding=0.7, width=-0.4), "UW": Viseme(0.2, rounding=1.0, width=-0.7),
}  # fmt: skip
_SILENT = Viseme(0.0, dominance=1.0)
_STOPS = frozenset({"P", "B", "M", "T", "D", "K", "G", "CH", "JH"})


@dataclass(frozen=True)
class CoarticulationConfig:
    """Args:
    anticipation_s: time constant of a phone's influence before it starts (lips move ahead of the sound).
    carryover_s: time constant of its influence after it ends.
    closure_dip_db: (acoustic path) a level dip this deep below both neighbours within speech is a stop closure.
    heard_weight: (phone path) how much of a viseme's opening follows the opening heard in the audio at that
        moment (0 = the viseme's own opening only, 1 = fully scaled by what is heard).
    """

    anticipation_s: float = 0.06
    carryover_s: float = 0.035
    closure_dip_db: float = 8.0
    heard_weight: float = 0.75


@dataclass(frozen=True)
class LipTrack:
    """Per-frame lip shape, each (T,) float32 except ``closed`` (bool).

    openness: uncalibrated opening (0 = closed). width: -1..1. rounding, lower_lip: 0..1.
    closed: frames where the lips must meet (p/b/m in the phone path, stop closures in the acoustic path).
    source: "phonemes" or "acoustic".
    """

    openness: np.ndarray
    width: np.ndarray
    rounding: np.ndarray
    lower_lip: np.ndarray
    closed: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.openness)


def lips_from_phones(
    transcript: PhoneTranscript, features: AudioFeatures, config: CoarticulationConfig | None = None
) -> LipTrack:
    """Blend viseme targets of the recognised phones into per-frame lip shapes (see module docstring)."""
    config = config or CoarticulationConfig()
    n = len(features)
    fps = features.fps
    times = (np.arange(n) + 0.5) / fps  # (T,) display mid-time of each frame, as the audio features use
    segs = transcript.segments
    if not segs or n == 0:
        return _closed_track(n, "phonemes")
    vis = [_SILENT if s.phone in SILENCE_PHONES else VISEMES.get(s.phone, _VELAR) for s in segs]
    starts = np.array([s.start_s for s in segs])  # (S,) in time order
    ends = np.array([s.end_s for s in segs])
    # Only segments near a frame matter (exp(-0.4 / 0.035) ~ 1e-5): gather a window of K segments per frame so
    # memory stays (T, K) for long audio instead of (T, S).
    lo = np.searchsorted(ends, times - 12 * config.carryover_s)  # (T,) first segment that can still matter
    hi = np.searchsorted(starts, times + 12 * config.anticipation_s)  # (T,) one past the last
    width_k = max(int((hi - lo).max()), 1)
    idx = lo[:, None] + np.arange(width_k)[None, :]  # (T, K)
    valid = idx < hi[:, None]
    idx = np.minimum(idx, len(segs) - 1)
    # Dominance: 1 inside a segment, exponential decay outside it (slower ahead of it: anticipation).
    before = np.clip(starts[idx] - times[:, None], 0, None)  # (T, K) seconds until the phone starts
    after = np.clip(times[:, None] - ends[idx], 0, None)  # (T, K) seconds since it ended
    dominance = np.array([v.dominance for v in vis])
    dom = np.exp(-before / config.anticipation_s - after / config.carryover_s) * dominance[idx] * valid + 1e-9
    weights = dom / dom.sum(axis=1, keepdims=True)  # (T, K)

    def blend(attr: str) -> np.ndarray:
        target = np.array([float(getattr(v, attr)) for v in vis])  # (S,)
        return (weights * target[idx]).sum(axis=1).astype(np.float32)  # (T,)

    # The phone says which shape the lips take; how far they open at that moment is heard better than recognised:
    # a stressed syllable opens wider, a mumbled one less, a vowel the recogniser got wrong (another language)
    # still opens as wide as it sounds. So the viseme's opening is scaled by the acoustic opening (loudness,
    # vowel spectrum, F1: language-independent). On 20 clips in 6 languages and singing, this raised the
    # mouth/envelope correlation (best lag) of the motion from a median 0.55 (loudness alone, weight 0.45) to 0.66.
    heard = _acoustic_openness(features)
    speech = ~features.silence
    top = float(np.percentile(heard[speech], 95)) if speech.any() else 0.0
    heard = np.clip(heard / top, 0.0, 1.2) if top > 0 else np.zeros_like(heard)
    openness = blend("openness") * ((1.0 - config.heard_weight) + config.heard_weight * heard)
    closed = np.zeros(n, dtype=bool)
    stop = np.zeros(n, dtype=bool)
    for seg, v in zip(segs, vis, strict=True):
        frames = _frames_of(seg.start_s, seg.end_s, fps, n)
        closed[frames] |= v.closed
        stop[frames] |= seg.phone in _STOPS
    # The recogniser often hears a p/b as t/k/g (same silent closure, different release). A silent closure in
    # the audio where a stop was recognised closes the lips too: a closed mouth on a "t" looks natural, a
    # missed "p" does not (measured on LJ001-0001: p/b/m closed 4/7 -> see tests/generation/test_motion.py).
    near_stop = stop | np.concatenate([stop[1:], [False]]) | np.concatenate([[False], stop[:-1]])
    closed |= _stop_closures(features, config) & near_stop
    return LipTrack(
        openness=openness.astype(np.float32),
        width=blend("width"),
        rounding=blend("rounding"),
        lower_lip=blend("lower_lip"),
        closed=closed,
        source="phonemes",
    )


def _frames_of(start_s: float, end_s: float, fps: int, n: int) -> np.ndarray:
    """Frames whose display mid-time falls in [start_s, end_s); if none (a closure shorter than a frame), the
    frame nearest the segment's middle, so every p/b/m closes the lips on at least one frame."""
    first = int(np.ceil(start_s * fps - 0.5))
    last = int(np.ceil(end_s * fps - 0.5))  # exclusive
    if last > first:
        return np.arange(max(first, 0), min(last, n))
    mid = int(np.clip(np.floor((start_s + end_s) / 2 * fps), 0, max(n - 1, 0)))
    return np.array([mid] if n else [], dtype=np.int64)


def _acoustic_openness(features: AudioFeatures) -> np.ndarray:
    """(T,) uncalibrated opening heard in the audio, 0 in silence: open vowels are loud, voiced, low in the spectrum,
    with a high F1; fricatives (s, f, sh) are bright and noisy."""
    vowel = np.clip((features.low_high_db + 5.0) / 25.0, 0.0, 1.0)
    fricative = np.clip((features.zcr - 0.12) / 0.25, 0.0, 1.0)
    f1_open = np.clip((features.f1_hz - 350.0) / 400.0, 0.0, 1.0)
    openness = (
        features.loudness**1.2
        * (0.45 + 0.55 * vowel)
        * (0.75 + 0.5 * f1_open)
        * (1.0 - 0.6 * fricative)
        * (0.6 + 0.4 * features.voicing)
    )
    return np.where(features.silence, 0.0, openness).astype(np.float64)


def lips_from_acoustics(features: AudioFeatures, config: CoarticulationConfig | None = None) -> LipTrack:
    """Language-independent lips from loudness, spectral shape, formant proxies and voicing."""
    config = config or CoarticulationConfig()
    n = len(features)
    voiced = features.voicing
    openness = _acoustic_openness(features)
    speech = ~features.silence
    # Low F2 (o, u, w) rounds the lips; high F2 (i, e) spreads them. Only judged where voiced.
    rounding = np.clip((1350.0 - features.f2_hz) / 450.0, 0.0, 1.0) * voiced * speech
    spread = np.clip((features.f2_hz - 1500.0) / 600.0, 0.0, 1.0) * voiced * speech
    width = spread - 0.7 * rounding
    closed = _stop_closures(features, config) & speech
    return LipTrack(
        openness=openness.astype(np.float32),
        width=width.astype(np.float32),
        rounding=rounding.astype(np.float32),
        lower_lip=np.zeros(n, dtype=np.float32),
        closed=closed,
        source="acoustic",
    )


def _stop_closures(features: AudioFeatures, config: CoarticulationConfig) -> np.ndarray:
    """Frames that are a short level dip (<= 2 frames) inside speech: the silent closure of a stop consonant."""
    level = features.rms_db.astype(np.float64)
    n = len(level)
    pad = np.pad(level, 3, mode="edge")
    left = np.max(np.stack([pad[3 - k : 3 - k + n] for k in (1, 2, 3)]), axis=0)  # (T,) loudest of t-3..t-1
    right = np.max(np.stack([pad[3 + k : 3 + k + n] for k in (1, 2, 3)]), axis=0)
    dip = (level < left - config.closure_dip_db) & (level < right - config.closure_dip_db)
    return dip


def _closed_track(n: int, source: str) -> LipTrack:
    zeros = np.zeros(n, dtype=np.float32)
    return LipTrack(zeros, zeros.copy(), zeros.copy(), zeros.copy(), np.zeros(n, dtype=bool), source)
