"""Motion: audio features -> a per-frame MotionState (head pose, mouth, lids, brows, gaze).

The MotionState is the one interface between "what the face does" and "how it is drawn": the renderer consumes
only this. Amplitudes are in face-relative units (inter-ocular distance, IOD), independent of the crop.
The mouth is calibrated to real talking heads: inner-lip gap ~0.04-0.09 IOD at the median, 0.13-0.16 at the
90th percentile, closed in silence.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from generation.audio_features import AudioFeatures

__all__ = ["MotionConfig", "MotionState", "motion_from_audio", "blink_track", "inner_gap_targets"]


@dataclass(frozen=True)
class MotionConfig:
    """Args:
    fps: frame rate. seed: randomness of blinks, head drift and gaze.
    intensity: scales head, brow and gaze motion.
    gap_median / gap_p90: target inner-lip gap (IOD units) at the median / 90th percentile of speech frames.
    gap_max: the widest opening ever produced.
    blinks_per_minute: mean blink rate; blink_min_s / blink_max_s: blink durations.
    head_yaw_deg / head_pitch_deg / head_roll_deg: standard deviation of the slow head drift.
    nod_deg: size of the nod on stressed syllables.
    """

    fps: int = 25
    seed: int = 0
    intensity: float = 1.0
    gap_median: float = 0.075
    gap_p90: float = 0.15
    gap_max: float = 0.24
    attack: float = 0.8
    release: float = 0.6
    blinks_per_minute: float = 17.0
    blink_min_s: float = 0.12
    blink_max_s: float = 0.32
    head_yaw_deg: float = 2.5
    head_pitch_deg: float = 1.8
    head_roll_deg: float = 1.2
    nod_deg: float = 1.6


@dataclass
class MotionState:
    """Per-frame facial state; every field is a float32 array shaped (T,).

    Units: yaw/pitch/roll radians (positive yaw = subject turns to their left, positive pitch = chin down);
    tx/ty fractions of the output side; scale multiplicative (1 = photo size);
    jaw_open = inner-lip gap in IOD;
    lip_width = relative change of mouth width; lip_round, smile, brow_*, blink_* in [0, 1];
    gaze_x/gaze_y in [-1, 1] of the iris travel (positive = image right / down).
    """

    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    scale: np.ndarray
    jaw_open: np.ndarray
    lip_width: np.ndarray
    lip_round: np.ndarray
    smile: np.ndarray
    brow_l: np.ndarray
    brow_r: np.ndarray
    blink_l: np.ndarray
    blink_r: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray

    @classmethod
    def neutral(cls, n_frames: int) -> MotionState:
        """A still face: everything zero, scale one."""
        values = {f.name: np.zeros(n_frames, dtype=np.float32) for f in fields(cls)}
        values["scale"] = np.ones(n_frames, dtype=np.float32)
        return cls(**values)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def __len__(self) -> int:
        return len(self.yaw)

    def slice(self, start: int, stop: int) -> MotionState:
        """Frames [start, stop) (for batched rendering)."""
        return MotionState(**{name: getattr(self, name)[start:stop] for name in self.field_names()})

    def as_array(self) -> np.ndarray:
        """(T, D) float32 in field_names() order."""
        return np.stack([getattr(self, name) for name in self.field_names()], axis=1).astype(np.float32)


def motion_from_audio(features: AudioFeatures, config: MotionConfig | None = None) -> MotionState:
    """Derive the whole face's motion from the audio, reproducibly for a given seed."""
    config = config or MotionConfig(fps=features.fps)
    n = len(features)
    rng = np.random.default_rng(config.seed)
    state = MotionState.neutral(n)

    gap, width, rounding = _mouth(features, config)
    state.jaw_open[:] = gap
    state.lip_width[:] = width
    state.lip_round[:] = rounding

    blink = blink_track(n, config, rng)
    state.blink_l[:] = blink
    state.blink_r[:] = blink

    yaw, pitch, roll, brow = _head_and_brows(features, config, rng)
    state.yaw[:], state.pitch[:], state.roll[:] = yaw, pitch, roll
    state.brow_l[:] = brow
    state.brow_r[:] = brow * 0.9
    state.tx[:] = np.sin(yaw) * 0.02  # a turn also shifts the head a little
    state.ty[:] = np.sin(pitch) * 0.02
    gx, gy = _gaze(n, config, rng)
    state.gaze_x[:], state.gaze_y[:] = gx, gy
    return state


def inner_gap_targets(features: AudioFeatures, config: MotionConfig) -> np.ndarray:
    """Raw (uncalibrated) per-frame mouth opening from loudness, voicing and spectral shape."""
    # Open vowels: loud, voiced, energy in the low band. Fricatives (s, f, sh): bright, noisy, little opening.
    vowel = np.clip((features.low_high_db + 5.0) / 25.0, 0.0, 1.0)
    fricative = np.clip((features.zcr - 0.12) / 0.25, 0.0, 1.0)
    raw = (
        features.loudness**1.2
        * (0.45 + 0.55 * vowel)
        * (1.0 - 0.6 * fricative)
        * (0.6 + 0.4 * features.voicing)
    )
    return np.where(features.silence, 0.0, raw)


def _calibrate(raw: np.ndarray, speech: np.ndarray, config: MotionConfig) -> np.ndarray:
    """Map raw openings through quantiles so speech frames hit the real-video gap statistics."""
    if speech.sum() < 3 or np.max(raw[speech]) <= 0:
        return np.zeros_like(raw)
    values = raw[speech]
    q50, q90, q100 = np.percentile(values, [50, 90, 100])
    q50 = max(q50, 1e-6)
    q90 = max(q90, q50 * 1.01)
    q100 = max(q100, q90 * 1.01)
    xs = [0.0, q50, q90, q100]
    ys = [0.0, config.gap_median, config.gap_p90, config.gap_max]
    return np.interp(raw, xs, ys)


def _mouth(features: AudioFeatures, config: MotionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    speech = ~features.silence
    target = _calibrate(inner_gap_targets(features, config), speech, config)
    # Coarticulation: the lips start moving toward the next sound before it is heard (one-frame look-ahead).
    ahead = np.concatenate([target[1:], target[-1:]])
    target = np.maximum(target, 0.55 * ahead)
    # Attack/release smoothing: opens fast, closes a little slower, never chatters frame to frame.
    gap = np.zeros_like(target)
    level = 0.0
    for t, value in enumerate(target):
        k = config.attack if value > level else config.release
        level += k * (value - level)
        gap[t] = level
    # Silence means a closed mouth, exactly (not "almost"): the audio-visual check measures it.
    silence = features.silence & ~np.concatenate([speech[1:], [False]])  # keep the anticipatory frame
    gap = np.where(silence, 0.0, gap)
    gap = np.clip(gap, 0.0, config.gap_max)

    brightness = np.clip((features.centroid_hz - 1500.0) / 2500.0, -1.0, 1.0)
    # Rounded vowels (o, u): dark spectrum, voiced, moderate opening.
    rounding = np.clip(-brightness, 0, 1) * features.voicing * np.clip(gap / config.gap_p90, 0, 1)
    # Spread (i, e, s): bright spectrum widens the mouth a little.
    width = 0.06 * np.clip(brightness, 0, 1) * (~features.silence) - 0.10 * rounding
    return (
        gap.astype(np.float32),
        gaussian_filter1d(width, 1.0).astype(np.float32),
        gaussian_filter1d(rounding, 1.0).astype(np.float32),
    )


def blink_track(n_frames: int, config: MotionConfig, rng: np.random.Generator) -> np.ndarray:
    """Blink closure in [0, 1] per frame: random intervals (gamma, mean 60/rate s), 100-400 ms each.

    The profile closes fast and opens slower, and always reaches full closure on at least one frame.
    """
    fps = config.fps
    out = np.zeros(n_frames, dtype=np.float32)
    mean_interval = 60.0 / max(config.blinks_per_minute, 1e-3)
    t = rng.uniform(0.3, mean_interval)
    while True:
        start = int(round(t * fps))
        duration = rng.uniform(config.blink_min_s, config.blink_max_s)
        length = max(3, int(round(duration * fps)))
        if start + length > n_frames:
            break
        close = max(1, int(round(length * 0.35)))
        profile = np.concatenate(
            [
                np.linspace(0.0, 1.0, close + 1)[1:],  # closing, ends fully closed
                np.linspace(1.0, 0.0, length - close + 1)[1:-1],  # opening, ends before fully open
            ]
        )
        out[start : start + len(profile)] = np.maximum(out[start : start + len(profile)], profile)
        # Gamma-shaped intervals: blinks cluster a little but never closer than 1 s.
        t += max(1.0, rng.gamma(shape=3.0, scale=mean_interval / 3.0)) + duration
    return out


def _smooth_noise(n: int, rng: np.random.Generator, sigma_frames: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise.

    The std is measured on a long realisation (at least 40 sigmas), never on a short clip's window: a short
    window of slow noise is nearly constant, and dividing by its tiny std would blow the amplitude up.
    """
    pad = int(4 * sigma_frames)
    length = max(n, int(40 * sigma_frames)) + 2 * pad
    noise = gaussian_filter1d(rng.standard_normal(length), sigma_frames)[pad:-pad]
    noise = (noise - noise.mean()) / max(float(noise.std()), 1e-9)
    return noise[:n]


def _head_and_brows(
    features: AudioFeatures, config: MotionConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(features)
    fps = config.fps
    k = config.intensity
    speech = (~features.silence).astype(np.float64)
    activity = 0.5 + 0.5 * gaussian_filter1d(speech, fps * 0.5)  # calmer in pauses
    deg = np.pi / 180.0
    yaw = _smooth_noise(n, rng, fps * 0.9) * config.head_yaw_deg * deg
    pitch = _smooth_noise(n, rng, fps * 0.7) * config.head_pitch_deg * deg
    roll = _smooth_noise(n, rng, fps * 1.2) * config.head_roll_deg * deg

    # Nods on stressed syllables: peaks of rising loudness, at most one per 0.6 s.
    onset = np.clip(np.diff(features.loudness, prepend=0.0), 0, None) * features.loudness
    peaks, _ = find_peaks(onset, height=0.08, distance=max(1, int(0.6 * fps)))
    impulses = np.zeros(n)
    impulses[peaks] = np.clip(onset[peaks] / 0.3, 0.3, 1.0)
    kernel_t = np.arange(int(0.5 * fps)) / fps
    kernel = np.sin(np.pi * kernel_t / 0.5) ** 2  # a 0.5 s down-and-back bump
    nods = np.convolve(impulses, kernel)[:n]
    pitch = pitch * activity + nods * config.nod_deg * deg

    # Brows rise with pitch accents (f0 well above the speaker's median) and a little on nods.
    voiced = features.f0_hz > 0
    brow = np.zeros(n)
    if voiced.sum() > 5:
        median_f0 = float(np.median(features.f0_hz[voiced]))
        accent = np.where(voiced, np.clip((features.f0_hz / median_f0 - 1.1) / 0.3, 0, 1), 0.0)
        brow = gaussian_filter1d(accent, fps * 0.15)
    brow = np.clip(brow * 0.8 + 0.25 * nods, 0, 1)
    return (
        (yaw * activity * k).astype(np.float32),
        (pitch * k).astype(np.float32),
        (roll * activity * k).astype(np.float32),
        (brow * k).astype(np.float32),
    )


def _gaze(n: int, config: MotionConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mostly at the camera, with small saccades every 1-3 s (piecewise constant, two-frame transitions)."""
    gx = np.zeros(n)
    gy = np.zeros(n)
    t = 0
    while t < n:
        hold = int(rng.uniform(1.0, 3.0) * config.fps)
        look_away = rng.random() < 0.35
        gx[t : t + hold] = rng.normal(0.0, 0.15) if look_away else 0.0
        gy[t : t + hold] = rng.normal(0.0, 0.08) if look_away else 0.0
        t += hold
    k = config.intensity
    return (
        (gaussian_filter1d(gx, 0.8) * k).astype(np.float32),
        (gaussian_filter1d(gy, 0.8) * k).astype(np.float32),
    )
