"""Physiological cue: is there one heartbeat under the skin? (remote photoplethysmography, FakeCatcher-style)

Living skin changes colour very slightly with each heartbeat, in step across the forehead and both cheeks. We take
the mean colour of three skin patches in every analysed frame, extract each patch's pulse signal with the POS
projection (Wang et al., 2017, "Algorithmic principles of remote PPG"), band-pass it to 0.7-3.5 Hz (42-210 bpm), and
measure how strong (spectral SNR) and how coherent (correlation, same peak frequency) the three signals are. A
background patch goes through the same steps as a control: light flicker and compression pumping move face and
background together, a pulse moves the face alone.

Needs >= 4 s of frames at >= 8 fps with the face meshed in most of them; otherwise the cue does not apply.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import signal

from safeguards.cues.base import CueMeasurement
from safeguards.cues.geometry import CHEEK_LEFT, CHEEK_RIGHT, FOREHEAD
from safeguards.cues.track import FaceTrack, Segment

MIN_SECONDS = 4.0
MIN_FPS = 8.0
BAND = (0.7, 3.5)  # Hz
REGIONS = {"forehead": FOREHEAD, "cheek_right": CHEEK_RIGHT, "cheek_left": CHEEK_LEFT}


def region_means(seg: Segment) -> dict[str, np.ndarray]:
    """Mean RGB of each skin patch and of a background patch per frame: name -> (T, 3), NaN where unmeasured."""
    t = len(seg.times)
    out = {name: np.full((t, 3), np.nan) for name in [*REGIONS, "background"]}
    for i in range(t):
        lm = seg.landmarks[i]
        if np.isnan(lm[0, 0]):
            continue
        crop = seg.crops[i]
        for name, idx in REGIONS.items():
            mask = np.zeros(crop.shape[:2], np.uint8)
            cv2.fillConvexPoly(mask, cv2.convexHull(lm[list(idx), :2].astype(np.int32)), 1)
            if mask.sum() >= 20:
                out[name][i] = cv2.mean(crop, mask)[:3]
        # Background control: the crop's top corners (above the shoulders, beside the hair).
        corners = np.concatenate([crop[:24, :24].reshape(-1, 3), crop[:24, -24:].reshape(-1, 3)])
        out["background"][i] = corners.mean(0)
    return out


def pos_pulse(rgb: np.ndarray, fps: float) -> np.ndarray:
    """POS pulse signal of a (T, 3) colour trace (overlap-added 1.6 s windows). Returns (T,)."""
    t = len(rgb)
    win = max(int(round(1.6 * fps)), 4)
    h = np.zeros(t)
    proj = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])
    for n in range(0, t - win + 1):
        c = rgb[n : n + win]
        c = c / np.maximum(c.mean(0, keepdims=True), 1e-6)  # (win, 3) temporally normalised
        s = c @ proj.T  # (win, 2)
        a = s[:, 0] + (s[:, 0].std() / max(s[:, 1].std(), 1e-9)) * s[:, 1]
        h[n : n + win] += a - a.mean()
    return h


def _fill(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN rows of a (T, C) array."""
    x = x.copy()
    idx = np.arange(len(x))
    for c in range(x.shape[1]):
        ok = ~np.isnan(x[:, c])
        if ok.sum() >= 2:
            x[:, c] = np.interp(idx, idx[ok], x[ok, c])
    return x


def _bandpass(x: np.ndarray, fps: float) -> np.ndarray:
    hi = min(BAND[1], 0.45 * fps)
    sos = signal.butter(3, [BAND[0], hi], btype="bandpass", fs=fps, output="sos")
    return signal.sosfiltfilt(sos, x - x.mean())


def _spectrum(x: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    n = max(1024, 1 << int(np.ceil(np.log2(len(x) * 4))))
    f = np.fft.rfftfreq(n, 1 / fps)
    p = np.abs(np.fft.rfft(x * np.hanning(len(x)), n)) ** 2
    band = (f >= BAND[0]) & (f <= min(BAND[1], 0.45 * fps))
    return f[band], p[band]


def _snr_db(f: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(SNR in dB of the strongest peak and its first harmonic against the rest of the band, peak frequency)."""
    k = int(np.argmax(p))
    f0 = float(f[k])
    near = (np.abs(f - f0) <= 0.1) | (np.abs(f - 2 * f0) <= 0.1)
    return float(10 * np.log10(p[near].sum() / max(p[~near].sum(), 1e-12))), f0


class PulseCue:
    name = "rppg"
    description = "pulse coherence across forehead and cheeks (remote photoplethysmography)"

    def measure(self, track: FaceTrack) -> CueMeasurement:
        usable = [s for s in track.segments if s.fps >= MIN_FPS and len(s.times) / max(s.fps, 1e-6) >= MIN_SECONDS
                  and s.found.mean() >= 0.8]  # fmt: skip
        if not usable:
            need = f"needs >= {MIN_SECONDS:.0f} s of a tracked face at >= {MIN_FPS:.0f} fps"
            return CueMeasurement(False, reason=need)
        snrs, coh, spread, bg_corr, bpm, plots = [], [], [], [], [], []
        for seg in usable:
            fps = seg.fps
            means = {k: _fill(v) for k, v in region_means(seg).items()}
            pulses = {k: _bandpass(pos_pulse(v, fps), fps) for k, v in means.items() if not np.isnan(v).any()}
            skin = [k for k in REGIONS if k in pulses]
            if len(skin) < 2:
                continue
            freqs = []
            for k in skin:
                s, f0 = _snr_db(*_spectrum(pulses[k], fps))
                snrs.append(s)
                freqs.append(f0)
            pairs = [(a, b) for i, a in enumerate(skin) for b in skin[i + 1 :]]
            coh.append(float(np.mean([np.corrcoef(pulses[a], pulses[b])[0, 1] for a, b in pairs])))
            spread.append(float(np.std(freqs)))
            if "background" in pulses and pulses["background"].std() > 1e-9:
                bg_corr.append(float(np.mean([abs(np.corrcoef(pulses[k], pulses["background"])[0, 1]) for k in skin])))
            elif "background" in pulses:
                bg_corr.append(0.0)  # a frozen background carries no signal at all
            face = np.mean([pulses[k] / max(pulses[k].std(), 1e-9) for k in skin], axis=0)
            s_face, f_face = _snr_db(*_spectrum(face, fps))
            bpm.append(60 * f_face)
            plots.append({"t": (seg.times - seg.times[0]).round(3).tolist(), "pulse": face.round(3).tolist(),
                          "start_s": round(seg.start_s, 2)})  # fmt: skip
        if not snrs:
            return CueMeasurement(False, reason="the skin patches could not be measured")
        features = {
            "snr_db": float(np.mean(snrs)),
            "coherence": float(np.mean(coh)),
            "peak_spread_hz": float(np.mean(spread)),
            "background_corr": float(np.mean(bg_corr)) if bg_corr else 0.0,
        }
        evidence = {
            "pulse_snr_db": round(features["snr_db"], 2),
            "region_coherence": round(features["coherence"], 3),
            "peak_frequency_spread_hz": round(features["peak_spread_hz"], 3),
            "background_correlation": round(features["background_corr"], 3),
            "estimated_bpm": [round(b, 1) for b in bpm],
            "signal": plots[0] if plots else None,
        }
        return CueMeasurement(True, features, evidence)
