"""Motion: audio features -> a per-frame MotionState (head pose, mouth, lids, brows, gaze).

The MotionState is the one interface between "what the face does" and "how it is drawn": the renderer consumes
only this. Amplitudes are in face-relative units (inter-ocular distance, IOD), independent of the crop.

- Lips: a ``LipTrack`` (generation.visemes: from recognised phones with coarticulation, or from acoustics) is
  calibrated to real talking heads: inner-lip gap ~0.04-0.09 IOD at the median, 0.13-0.16 at the 90th
  percentile, exactly closed on p/b/m and in silence, never a one-frame flash, and 80 ms ahead of the sound.
- The rest follows prosody: nods and small turns on stressed syllables, a new head orientation per phrase and
  every 1-2 s within one (yaw std 5-9 degrees like real talking heads, within 20 degrees), more motion in louder
  stretches, chin up with high pitch, brows on pitch accents, blinks drawn to phrase boundaries (10-32 per minute,
  100-400 ms), calm idle in pauses. Random parts come from one seeded generator, so a seed reproduces the motion
  exactly.
- Controls (generation.controls) add gaze direction, head distance and emotion offsets and scale the motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from generation.audio_features import AudioFeatures
from generation.controls import Controls, EmotionOffsets, emotion_offsets
from generation.visemes import LipTrack, lips_from_acoustics

__all__ = [
    "MotionConfig",
    "MotionState",
    "motion_from_audio",
    "blink_profile",
    "blink_track",
    "inner_gap_targets",
    "phrase_boundaries",
]


@dataclass(frozen=True)
class MotionConfig:
    """Args:
    fps: frame rate. seed: randomness of blinks, head drift and gaze.
    intensity: scales head, brow and gaze motion (Controls.motion_intensity overrides it when set).
    gap_median / gap_p90: target inner-lip gap (IOD units) at the median / 90th percentile of speech frames.
    gap_max: the widest opening ever produced.
    lip_lead_s: the lips show the sound this much ahead of hearing it (rounded to whole frames, so closures stay
        exact): in real talking heads the mouth opens before the vowel it shapes is loud, and leads the audio
        envelope by 0-120 ms at the peak of their cross-correlation.
    blinks_per_minute: mean blink rate; blink_min_s / blink_max_s: blink durations.
    head_yaw_deg / head_pitch_deg / head_roll_deg: standard deviation of the slow head drift.
    nod_deg: size of the nod on stressed syllables. phrase_turn_deg: std of each new head orientation (per phrase,
        and every 1.0-2.2 s within long phrases).
    accent_turn_deg: size of the small turn that goes with a stressed syllable (speech-driven yaw).
    pitch_follow_deg: chin rise per octave of pitch above the speaker's median.
    max_head_deg: soft limit of any head angle, at every intensity: larger turns than ~20 degrees show the limits
        of rendering from a single photo (a hidden ear, hair torn from the background).
    blink_snap_s: a scheduled blink this close to a phrase boundary moves onto it.

    The head amplitudes are set so the yaw of speech, as dlib + solvePnP measure it on the rendered video
    (bench/eval_generation.py), has a standard deviation of 5-9 degrees like real talking heads, and its change per
    frame stays within 0.5-1.5x theirs (bench/RESULTS.md, "Lip sync and head motion").
    """

    fps: int = 25
    seed: int = 0
    intensity: float = 1.0
    gap_median: float = 0.075
    gap_p90: float = 0.15
    gap_max: float = 0.24
    attack: float = 0.8
    release: float = 0.6
    lip_lead_s: float = 0.08
    blinks_per_minute: float = 17.0
    blink_min_s: float = 0.2
    blink_max_s: float = 0.4
    head_yaw_deg: float = 6.5
    head_pitch_deg: float = 2.0
    head_roll_deg: float = 1.5
    nod_deg: float = 2.5
    phrase_turn_deg: float = 12.5
    accent_turn_deg: float = 2.5
    pitch_follow_deg: float = 3.0
    max_head_deg: float = 20.0
    blink_snap_s: float = 0.8


@dataclass
class MotionState:
    """Per-frame facial state; every field is a float32 array shaped (T,).

    Units: yaw/pitch/roll radians (positive yaw = subject turns to their left, positive pitch = chin down);
    tx/ty fractions of the output side; scale multiplicative (1 = photo size);
    jaw_open = inner-lip gap in IOD;
    lip_width = relative change of mouth width; lip_round in [0, 1];
    smile in [-1, 1] (< 0: corners down); brow_* in [-1, 1] (< 0: lowered); blink_* in [-0.3, 1]
    (1 closed, < 0 eyes widened); gaze_x/gaze_y in [-1, 1] of the iris travel (positive = image right / down).
    lower_lip_raise in [0, 1]: lower lip tucked up under the upper teeth (f, v).
    upper_lip_raise in [0, 1]: upper lip lifted off the teeth (anger, broad smile).
    The last two were added after v1: they default to zeros of the right length, so older constructors work.
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
    lower_lip_raise: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    upper_lip_raise: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def __post_init__(self) -> None:
        n = len(self.yaw)
        for name in ("lower_lip_raise", "upper_lip_raise"):
            if len(getattr(self, name)) != n:
                if len(getattr(self, name)) != 0:
                    raise ValueError(f"{name} has {len(getattr(self, name))} frames, the others {n}")
                setattr(self, name, np.zeros(n, dtype=np.float32))

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

    def select(self, frames: np.ndarray) -> MotionState:
        """A copy holding only the given frame indices."""
        return MotionState(**{name: getattr(self, name)[frames].copy() for name in self.field_names()})

    def as_array(self) -> np.ndarray:
        """(T, D) float32 in field_names() order."""
        return np.stack([getattr(self, name) for name in self.field_names()], axis=1).astype(np.float32)


def motion_from_audio(
    features: AudioFeatures,
    config: MotionConfig | None = None,
    *,
    lips: LipTrack | None = None,
    controls: Controls | None = None,
) -> MotionState:
    """Derive the whole face's motion from the audio, reproducibly for a given seed.

    Args:
        features: per-frame audio features (generation.audio_features).
        config: motion parameters; its seed/intensity are overridden by ``controls`` where those are set.
        lips: the lip track to calibrate; None = the language-independent acoustic path from ``features``.
        controls: gaze, head distance, emotion, intensity, seed; None = neutral.
    Returns:
        MotionState with len(features) frames.
    """
    config = config or MotionConfig(fps=features.fps)
    controls = controls or Controls()
    seed = config.seed if controls.seed is None else controls.seed
    intensity = config.intensity if controls.motion_intensity is None else controls.motion_intensity
    emotion = emotion_offsets(controls.emotion, controls.emotion_intensity)
    n = len(features)
    rng = np.random.default_rng(seed)
    state = MotionState.neutral(n)
    lips = lips if lips is not None else lips_from_acoustics(features)
    if len(lips) != n:
        raise ValueError(f"the lip track has {len(lips)} frames, the audio features {n}")

    gap, width, rounding, lower = _mouth(lips, features, config, emotion)
    state.jaw_open[:] = gap
    state.lip_width[:] = width
    state.lip_round[:] = rounding
    state.lower_lip_raise[:] = lower

    boundaries = phrase_boundaries(features)
    # Draw the random parts in a fixed order from one generator: same seed, same motion.
    blink = blink_track(n, config, rng, boundaries=boundaries)
    yaw, pitch, roll, brow = _head_and_brows(features, config, rng, intensity * emotion.head_activity, boundaries)
    gx, gy = _gaze(n, config, rng, intensity)

    k_lids = emotion.lids
    state.blink_l[:] = np.clip(blink + k_lids * (1.0 - blink), -0.3, 1.0)
    state.blink_r[:] = state.blink_l
    # The same limit at every intensity: it is what one photo can be turned by without tearing (higher intensities
    # move the head more often and further within it).
    limit = np.radians(config.max_head_deg)
    state.yaw[:] = _soft_limit(yaw, limit)
    state.pitch[:] = _soft_limit(pitch + np.radians(emotion.pitch_deg), limit)
    state.roll[:] = _soft_limit(roll, limit)
    state.brow_l[:] = np.clip(brow + emotion.brow, -1.0, 1.0)
    state.brow_r[:] = np.clip(brow * 0.9 + emotion.brow, -1.0, 1.0)
    state.smile[:] = np.clip(emotion.smile, -1.0, 1.0)
    state.upper_lip_raise[:] = np.clip(emotion.upper_lip, 0.0, 1.0)
    state.tx[:] = np.sin(state.yaw) * 0.02  # a turn also shifts the head a little
    state.ty[:] = np.sin(state.pitch) * 0.02
    state.scale[:] = 1.0 / controls.head_distance
    state.gaze_x[:] = np.clip(gx + controls.gaze_x, -1.0, 1.0)
    state.gaze_y[:] = np.clip(gy + controls.gaze_y + emotion.gaze_y, -1.0, 1.0)
    return state


def _soft_limit(angle: np.ndarray, limit: float) -> np.ndarray:
    """Smooth saturation at +-limit (tanh): rare large excursions of the random drift bend instead of clipping."""
    return (limit * np.tanh(np.asarray(angle, dtype=np.float64) / limit)).astype(np.float32)


def inner_gap_targets(features: AudioFeatures, config: MotionConfig) -> np.ndarray:
    """Raw (uncalibrated) per-frame mouth opening of the acoustic path (0 in silence)."""
    return lips_from_acoustics(features).openness


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


def _mouth(
    lips: LipTrack, features: AudioFeatures, config: MotionConfig, emotion: EmotionOffsets
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated gap, width, rounding and lower-lip tuck from a lip track, leading the audio by config.lip_lead_s."""
    # Everything below works on the shown timeline: frame t shows the lips of the sound heard lead frames later.
    lead = max(0, int(round(config.lip_lead_s * config.fps)))
    lips = LipTrack(
        openness=_advance(lips.openness, lead),
        width=_advance(lips.width, lead),
        rounding=_advance(lips.rounding, lead),
        lower_lip=_advance(lips.lower_lip, lead),
        closed=_advance(lips.closed, lead),
        source=lips.source,
    )
    quiet = _advance(features.silence, lead)
    speech = ~quiet
    # The calibration statistics are those of real speech including its closures, so count closed frames at 0.
    raw = np.where(lips.closed, 0.0, lips.openness.astype(np.float64))
    target = _calibrate(raw, speech, config)
    # Attack/release smoothing: opens fast, closes a little slower, never chatters frame to frame.
    gap = np.zeros_like(target)
    level = 0.0
    for t, value in enumerate(target):
        k = config.attack if value > level else config.release
        level += k * (value - level)
        gap[t] = level
    # p/b/m: the lips meet, exactly. Silence: closed, except the frame just before speech (anticipation).
    gap[lips.closed] = 0.0
    silence = quiet & ~np.concatenate([speech[1:], [False]])
    gap = np.where(silence, 0.0, gap)
    # Smoothing and closures shift the statistics a little: calibrate once more on the result (0 stays 0).
    gap = _calibrate(gap, speech, config) * emotion.gap_scale + emotion.gap_add * (gap > 0)
    gap = np.clip(gap, 0.0, config.gap_max)
    gap = _no_flashes(gap)

    width = np.where(lips.width > 0, 0.06, 0.10) * lips.width * speech
    rounding = np.clip(lips.rounding, 0.0, 1.0) * speech
    lower = np.clip(lips.lower_lip, 0.0, 1.0) * speech
    return (
        gap.astype(np.float32),
        gaussian_filter1d(width.astype(np.float64), 1.0).astype(np.float32),
        gaussian_filter1d(rounding.astype(np.float64), 1.0).astype(np.float32),
        gaussian_filter1d(lower.astype(np.float64), 0.7).astype(np.float32),
    )


def _advance(x: np.ndarray, frames: int) -> np.ndarray:
    """x[t + frames] at frame t; the last value is held past the end."""
    if frames <= 0 or len(x) == 0:
        return x
    if frames >= len(x):
        return np.repeat(x[-1:], len(x))
    return np.concatenate([x[frames:], np.repeat(x[-1:], frames)])


def _no_flashes(gap: np.ndarray, open_above: float = 0.02) -> np.ndarray:
    """Close any opening that lasts a single frame between closed frames (chattering), e.g. "m-a-m" at 25 fps.

    The flash is lowered to half of ``open_above``, not to it: a turned or tilted head projects the same opening a
    few per cent wider or narrower, and a gap left exactly at the threshold would read as open again on screen.
    """
    opened = gap > open_above
    prev_closed = np.concatenate([[True], ~opened[:-1]])
    next_closed = np.concatenate([~opened[1:], [True]])
    flash = opened & prev_closed & next_closed
    return np.where(flash, np.minimum(gap, 0.5 * open_above), gap)


def phrase_boundaries(features: AudioFeatures, min_pause_s: float = 0.15) -> np.ndarray:
    """Frames where a phrase ends: speech followed by a pause of at least ``min_pause_s`` (and the clip's end)."""
    speech = ~features.silence
    n = len(speech)
    ends = np.nonzero(speech[:-1] & ~speech[1:])[0] + 1 if n > 1 else np.zeros(0, dtype=np.int64)
    min_frames = max(1, int(round(min_pause_s * features.fps)))
    keep = [e for e in ends if not speech[e : e + min_frames].any()]
    return np.asarray(keep, dtype=np.int64)


def blink_track(
    n_frames: int, config: MotionConfig, rng: np.random.Generator, *, boundaries: np.ndarray | None = None
) -> np.ndarray:
    """Blink closure in [0, 1] per frame: random intervals (gamma, mean 60/rate s), 100-400 ms each.

    People blink at phrase ends and pauses: a scheduled blink within ``config.blink_snap_s`` of a boundary
    (frame index in ``boundaries``) moves onto it. The profile closes fast and opens slower, and always reaches
    full closure on at least one frame.
    """
    fps = config.fps
    out = np.zeros(n_frames, dtype=np.float32)
    mean_interval = 60.0 / max(config.blinks_per_minute, 1e-3)
    bounds = np.asarray(boundaries if boundaries is not None else [], dtype=np.float64) / fps  # seconds
    last_end = -1.0
    t = rng.uniform(0.3, mean_interval)
    while True:
        duration = rng.uniform(config.blink_min_s, config.blink_max_s)
        gap = max(1.0, rng.gamma(shape=3.0, scale=mean_interval / 3.0))
        when = t
        if len(bounds):
            nearest = bounds[np.argmin(np.abs(bounds - t))]
            if abs(nearest - t) <= config.blink_snap_s and nearest > last_end + 1.0:
                when = nearest
        start = int(round(when * fps))
        length = max(3, int(round(duration * fps)))
        if start + length > n_frames:
            break
        profile = blink_profile(length)
        out[start : start + len(profile)] = np.maximum(out[start : start + len(profile)], profile)
        last_end = when + duration
        # Gamma-shaped intervals: blinks cluster a little but never closer than 1 s.
        t = max(t, when) + gap + duration
    return out


def blink_profile(length: int) -> np.ndarray:
    """Lid closure over one blink of ``length`` frames (>= 3): a fast close, a short hold shut, a slower opening.

    Real blinks close in 70-100 ms, stay shut for a frame or two and reopen over 150-250 ms (the upper lid's
    opening is the slow phase). A shut hold matters for how a blink reads: with a linear close-open ramp, only one
    frame is fully closed and the blink looks (and measures, on an eye-aspect-ratio curve) like a flicker.
    The profile's last frame is still a little closed; the frame after it is open.
    """
    close = max(1, int(round(length * 0.3)))
    hold = max(1, int(round(length * 0.2))) if length >= 4 else 0
    opening = max(1, length - close - hold)
    ramp_up = np.linspace(0.0, 1.0, close + 1)[1:]  # ends fully closed
    # Smoothstep opening: lids leave the shut position slowly, then speed up, then settle.
    t = np.linspace(0.0, 1.0, opening + 2)[1:-1]
    ramp_down = 1.0 - t * t * (3.0 - 2.0 * t)
    return np.concatenate([ramp_up, np.ones(hold), ramp_down]).astype(np.float32)


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
    features: AudioFeatures,
    config: MotionConfig,
    rng: np.random.Generator,
    intensity: float,
    boundaries: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Head yaw, pitch, roll (radians) and brow raise from prosody, plus seeded drift.

    Three layers, each smooth (the fastest, a nod, takes 0.5 s):
    - slow drift (seconds), calmer in pauses;
    - a new orientation per phrase (a turn toward another "listener");
    - prosodic gestures: on stressed syllables (loudness onsets) a nod and a small turn that goes and comes back;
      high pitch lifts the chin; louder stretches of speech move the head more than quiet ones.
    """
    n = len(features)
    fps = config.fps
    k = intensity
    deg = np.pi / 180.0
    speech = (~features.silence).astype(np.float64)
    # Calmer in pauses: full activity while talking, a third of it after ~1 s of silence (idle).
    activity = 0.35 + 0.65 * gaussian_filter1d(speech, fps * 0.5)
    # Emphasis: louder stretches move the head more. Mean loudness over the clip's speech maps to 1.
    energy = gaussian_filter1d(features.loudness.astype(np.float64), fps * 0.4)
    talking = speech > 0
    mean_energy = float(energy[talking].mean()) if talking.any() else 0.0
    emphasis = 0.75 + 0.25 * np.clip(energy / mean_energy, 0.0, 2.0) if mean_energy > 0 else np.full(n, 0.75)
    yaw = _smooth_noise(n, rng, fps * 1.0) * config.head_yaw_deg * deg
    pitch = _smooth_noise(n, rng, fps * 0.7) * config.head_pitch_deg * deg
    roll = _smooth_noise(n, rng, fps * 1.2) * config.head_roll_deg * deg

    # Stressed syllables: peaks of rising loudness, at most one per 0.6 s.
    onset = np.clip(np.diff(features.loudness, prepend=0.0), 0, None) * features.loudness
    peaks, _ = find_peaks(onset, height=0.08, distance=max(1, int(0.6 * fps)))

    # The head settles into a new orientation (a turn toward another "listener") at each phrase and, within a long
    # phrase, on a stressed syllable once the last one has been held for 1.0-2.2 s. Real talking heads re-orient
    # every few seconds: a clip of a single long phrase held still would look frozen. The turn is a Gaussian step
    # (sigma 0.5 s, ~1 s end to end), which keeps it under ~2 degrees a frame. Each new orientation tends to the
    # other side of the last one (AR(1) with -0.5: the std stays phrase_turn_deg), as a speaker addressing a room
    # looks from side to side rather than drifting off to one.
    starts = _orientation_starts(n, boundaries, peaks, fps, rng)
    turn = np.zeros(n)
    tilt = np.zeros(n)
    side = 0.0
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        side = -0.5 * side + rng.normal(0.0, config.phrase_turn_deg * np.sqrt(0.75))
        turn[start:stop] = side
        tilt[start:stop] = rng.normal(0.0, config.phrase_turn_deg * 0.3)
    turn = gaussian_filter1d(turn, fps * 0.5) * deg
    tilt = gaussian_filter1d(tilt, fps * 0.5) * deg
    strength = np.clip(onset[peaks] / 0.3, 0.3, 1.0)
    impulses = np.zeros(n)
    impulses[peaks] = strength
    # Phrase ends get a small settling nod too.
    impulses[boundaries[boundaries < n]] = np.maximum(impulses[boundaries[boundaries < n]], 0.5)
    nods = np.convolve(impulses, _bump(0.5, fps))[:n]  # a 0.5 s down-and-back bump
    # Each accent also turns the head a little, mostly further the way the phrase already turned (emphasis toward
    # the listener), sometimes back; the turn lasts longer than the nod (0.9 s).
    phrase_sign = np.sign(turn[peaks]) if len(peaks) else np.zeros(0)
    phrase_sign[phrase_sign == 0] = 1.0
    sides = np.where(rng.random(len(peaks)) < 0.7, phrase_sign, -phrase_sign)
    accents = np.zeros(n)
    accents[peaks] = strength * sides
    accent_turn = np.convolve(accents, _bump(0.9, fps))[:n] * config.accent_turn_deg * deg

    # Pitch: high f0 lifts the chin a little (negative pitch = chin up); brows rise with pitch accents.
    voiced = features.f0_hz > 0
    brow = np.zeros(n)
    lift = np.zeros(n)
    if voiced.sum() > 5:
        median_f0 = float(np.median(features.f0_hz[voiced]))
        octaves = np.where(voiced, np.log2(np.maximum(features.f0_hz, 1.0) / median_f0), 0.0)
        lift = gaussian_filter1d(np.clip(octaves, -0.5, 0.7), fps * 0.2) * config.pitch_follow_deg * deg
        accent = np.where(voiced, np.clip((features.f0_hz / median_f0 - 1.1) / 0.3, 0, 1), 0.0)
        brow = gaussian_filter1d(accent, fps * 0.15)
    brow = np.clip(brow * 0.8 + 0.25 * nods, 0, 1)
    pitch = (pitch + tilt) * activity + (nods * config.nod_deg * deg - lift) * emphasis
    yaw = (yaw + turn) * activity * emphasis + accent_turn
    return (
        (yaw * k).astype(np.float32),
        (pitch * k).astype(np.float32),
        (roll * activity * k).astype(np.float32),
        (brow * min(k, 1.5)).astype(np.float32),
    )


def _orientation_starts(
    n: int, boundaries: np.ndarray, peaks: np.ndarray, fps: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames where the head takes a new orientation: 0, every phrase start, and stressed syllables (``peaks``)
    that come after the current orientation was held for a random 1.0-2.2 s and at least 0.5 s before the next
    phrase (which brings its own)."""
    phrase_starts = sorted({0, *(int(b) for b in boundaries if 0 < b < n)})
    out: list[int] = []
    for i, start in enumerate(phrase_starts):
        stop = phrase_starts[i + 1] if i + 1 < len(phrase_starts) else n
        out.append(start)
        hold = rng.uniform(1.0, 2.2) * fps
        for peak in peaks[(peaks > start) & (peaks < stop - 0.5 * fps)]:
            if peak - out[-1] >= hold:
                out.append(int(peak))
                hold = rng.uniform(1.0, 2.2) * fps
    return np.asarray(out, dtype=np.int64)


def _bump(duration_s: float, fps: int) -> np.ndarray:
    """A smooth out-and-back bump (sin^2) lasting duration_s, peak 1."""
    t = np.arange(max(2, int(round(duration_s * fps)))) / fps
    return np.sin(np.pi * t / duration_s) ** 2


def _gaze(
    n: int, config: MotionConfig, rng: np.random.Generator, intensity: float
) -> tuple[np.ndarray, np.ndarray]:
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
    k = intensity
    return (
        (gaussian_filter1d(gx, 0.8) * k).astype(np.float32),
        (gaussian_filter1d(gy, 0.8) * k).astype(np.float32),
    )
