"""Per-video-frame audio features: loudness, spectral shape, voicing, pitch, and a silence mask.

One analysis window per video frame, centred on the frame's display time, so feature ``t`` describes what is
heard while frame ``t`` is on screen. Everything is a few vectorised FFTs: a 10-minute clip takes well under a
second. Loudness is normalised per clip (noise floor -> 0, speech peaks -> 1) so quiet and loud recordings
drive the mouth alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_closing, binary_opening

from generation.media import AudioTrack, frame_count

__all__ = ["AudioFeatureConfig", "AudioFeatures", "extract_features"]


@dataclass(frozen=True)
class AudioFeatureConfig:
    """Args:
    fps: video frame rate (one feature row per frame).
    window_frames: analysis window length in video frames (2 = 80 ms at 25 fps, centred).
    silence_margin_db: speech must be this far above the clip's noise floor.
    silence_floor_dbfs: anything quieter than this is silence whatever the clip's statistics.
    min_speech_frames / min_pause_frames: shorter speech bursts are dropped, shorter pauses are bridged.
    """

    fps: int = 25
    window_frames: float = 2.0
    silence_margin_db: float = 10.0
    silence_floor_dbfs: float = -55.0
    min_speech_frames: int = 2
    min_pause_frames: int = 2
    f0_min_hz: float = 70.0
    f0_max_hz: float = 400.0


@dataclass(frozen=True)
class AudioFeatures:
    """Per-frame features, each shaped (T,) with T = ceil(duration * fps).

    Attributes:
        rms_db: RMS level in dBFS.
        loudness: rms_db mapped to [0, 1] between the noise floor and the clip's speech peaks (0 in silence).
        centroid_hz: spectral centroid (bright fricatives high, open vowels low).
        low_high_db: energy 100-1000 Hz over 2-6 kHz in dB (vowels > 0, s/f/sh < 0).
        zcr: zero-crossing rate per sample.
        voicing: periodicity in [0, 1] (normalised autocorrelation peak in the pitch range).
        f0_hz: pitch where voiced, else 0.
        f1_hz / f2_hz: first/second formant proxies, the spectral centroid of 250-1000 Hz / 900-2800 Hz
            (open vowels raise F1; rounded vowels lower F2, spread vowels raise it). Language-independent.
        silence: True where nobody speaks (after hysteresis, bridging and de-chattering).
    """

    rms_db: np.ndarray
    loudness: np.ndarray
    centroid_hz: np.ndarray
    low_high_db: np.ndarray
    zcr: np.ndarray
    voicing: np.ndarray
    f0_hz: np.ndarray
    silence: np.ndarray
    fps: int
    f1_hz: np.ndarray
    f2_hz: np.ndarray

    def __len__(self) -> int:
        return len(self.rms_db)


def _frame_signal(samples: np.ndarray, n_frames: int, hop: float, win: int) -> np.ndarray:
    """(T, win) windows centred on each frame's display midpoint."""
    centers = ((np.arange(n_frames) + 0.5) * hop).astype(np.int64)
    starts = centers - win // 2
    padded = np.pad(samples, (win, win + int(np.ceil(hop)) + 1))
    idx = starts[:, None] + win + np.arange(win)[None, :]  # (T, win)
    return padded[idx]


def extract_features(audio: AudioTrack, config: AudioFeatureConfig | None = None) -> AudioFeatures:
    """Compute the per-frame features that drive the mouth, head and brows."""
    config = config or AudioFeatureConfig()
    sr = audio.sample_rate
    n_frames = frame_count(audio.duration_s, config.fps)
    hop = sr / config.fps
    win = int(round(config.window_frames * hop))
    x = audio.samples.astype(np.float32)
    frames = _frame_signal(x - float(np.mean(x)) if len(x) else x, n_frames, hop, win)  # (T, win)

    rms = np.sqrt(np.mean(frames**2, axis=1) + 1e-12)
    rms_db = 20.0 * np.log10(rms + 1e-9)
    zcr = np.mean(np.abs(np.diff(np.signbit(frames), axis=1)), axis=1).astype(np.float32)

    n_fft = 1 << int(np.ceil(np.log2(win)))
    spec = np.abs(np.fft.rfft(frames * np.hanning(win)[None, :], n=n_fft, axis=1)) ** 2  # (T, F)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    total = spec.sum(axis=1) + 1e-12
    centroid = (spec * freqs[None, :]).sum(axis=1) / total
    low = spec[:, (freqs >= 100) & (freqs < 1000)].sum(axis=1) + 1e-12
    high = spec[:, (freqs >= 2000) & (freqs < 6000)].sum(axis=1) + 1e-12
    low_high_db = 10.0 * np.log10(low / high)
    f1 = _band_centroid(spec, freqs, 250.0, 1000.0)
    f2 = _band_centroid(spec, freqs, 900.0, 2800.0)

    voicing, f0 = _pitch(frames, sr, config)
    silence, floor_db, peak_db = _silence_mask(rms_db, config)
    # Without pauses (singing, music beds) the 10th percentile is the voice itself, and loudness measured from it
    # would be ~0 throughout: measure from at most 30 dB below the peaks instead.
    floor_db = min(floor_db, peak_db - 30.0)
    loudness = np.clip(
        (rms_db - (floor_db + config.silence_margin_db * 0.5)) / max(peak_db - floor_db, 6.0), 0, 1
    )
    loudness = np.where(silence, 0.0, loudness)
    f0 = np.where(silence, 0.0, f0)
    return AudioFeatures(
        rms_db=rms_db.astype(np.float32),
        loudness=loudness.astype(np.float32),
        centroid_hz=centroid.astype(np.float32),
        low_high_db=low_high_db.astype(np.float32),
        zcr=zcr,
        voicing=voicing.astype(np.float32),
        f0_hz=f0.astype(np.float32),
        silence=silence,
        fps=config.fps,
        f1_hz=f1.astype(np.float32),
        f2_hz=f2.astype(np.float32),
    )


def _band_centroid(spec: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(T,) power-weighted mean frequency inside [lo, hi): a cheap formant proxy that needs no LPC."""
    band = (freqs >= lo) & (freqs < hi)
    power = spec[:, band]  # (T, F_band)
    return (power * freqs[band][None, :]).sum(axis=1) / (power.sum(axis=1) + 1e-12)


def _pitch(frames: np.ndarray, sr: int, config: AudioFeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Autocorrelation pitch: voicing = normalised peak height in the f0 lag range, f0 = sr / peak lag."""
    win = frames.shape[1]
    n_fft = 1 << int(np.ceil(np.log2(2 * win)))
    window = np.hanning(win)
    spec = np.fft.rfft(frames * window[None, :], n=n_fft, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :win]  # (T, win)
    # Divide out the window's own autocorrelation, which otherwise favours short lags (octave-up errors).
    ac_window = np.fft.irfft(np.abs(np.fft.rfft(window, n=n_fft)) ** 2)[:win]
    ac = (ac / np.maximum(ac_window[None, :] / ac_window[0], 0.05)) / (ac[:, :1] + 1e-12)
    lo = int(sr / config.f0_max_hz)
    hi = min(int(sr / config.f0_min_hz), win - 1)
    if hi <= lo:
        zeros = np.zeros(len(frames))
        return zeros, zeros
    band = ac[:, lo:hi]
    lag = np.argmax(band, axis=1) + lo
    voicing = np.clip(band.max(axis=1), 0.0, 1.0)
    f0 = np.where(voicing > 0.35, sr / lag, 0.0)
    return voicing, f0


def _silence_mask(rms_db: np.ndarray, config: AudioFeatureConfig) -> tuple[np.ndarray, float, float]:
    """Adaptive silence: a threshold above the clip's noise floor, with hysteresis and run-length cleanup."""
    floor_db = float(np.percentile(rms_db, 10))
    peak_db = float(np.percentile(rms_db, 95))
    # If the whole clip is speech, the 10th percentile is speech too: keep the threshold <= peak - 20 dB.
    on = max(min(floor_db + config.silence_margin_db, peak_db - 20.0), config.silence_floor_dbfs)
    off = on - 3.0
    speaking = np.zeros(len(rms_db), dtype=bool)
    state = False
    for t, level in enumerate(rms_db):
        state = level > (off if state else on)
        speaking[t] = state
    if config.min_pause_frames > 0:
        speaking = binary_closing(speaking, structure=np.ones(config.min_pause_frames + 1), border_value=0)
    if config.min_speech_frames > 1:
        speaking = binary_opening(speaking, structure=np.ones(config.min_speech_frames))
    speaking &= rms_db > config.silence_floor_dbfs
    return ~speaking, floor_db, peak_db
