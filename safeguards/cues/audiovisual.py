"""Audio-visual cue: how the mouth moves with the sound.

Audio-driven generators and lip-sync tools move the mouth from the audio envelope, so the coupling is unusually
tight and has almost no lead or lag; in real speech the mouth leads the sound by tens of milliseconds and the
coupling is looser (articulation is not loudness). Mouths that keep moving in silence, or stay still through
speech, are suspicious in the other direction. Measured per segment on the analysed frames:

- the best correlation between mouth opening and the log loudness envelope over lags of +-0.3 s, and that lag;
- the same for their frame-to-frame changes (onsets), which removes slow drifts common to both;
- mouth motion in the quiet frames relative to the speaking frames.

Applies only when the file has an audio track with sound in it (not digital silence) and a face is tracked.
"""

from __future__ import annotations

import numpy as np

from safeguards.cues.base import CueMeasurement
from safeguards.cues.geometry import mouth_opening
from safeguards.cues.track import FaceTrack, Segment

MAX_LAG_S = 0.3
SILENT_DBFS = -55.0  # a track whose loud frames stay under this is digital silence


def loudness_at(samples: np.ndarray, rate: int, times: np.ndarray, window_s: float) -> np.ndarray:
    """Log RMS (dBFS) of the audio in a window centred on each time. Returns (T,)."""
    half = max(int(window_s * rate / 2), 1)
    out = np.empty(len(times))
    for i, t in enumerate(times):
        c = int(t * rate)
        chunk = samples[max(c - half, 0) : c + half]
        out[i] = 20 * np.log10(np.sqrt(np.mean(chunk**2)) + 1e-6) if len(chunk) else -120.0
    return out


def best_lag_corr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """Highest Pearson correlation of a[t] with b[t + lag] over |lag| <= max_lag, and that lag (frames)."""
    best, best_lag = -1.0, 0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, -lag) : len(a) - max(0, lag)]
        y = b[max(0, lag) : len(b) - max(0, -lag)]
        if len(x) < 8 or x.std() < 1e-9 or y.std() < 1e-9:
            continue
        c = float(np.corrcoef(x, y)[0, 1])
        if c > best:
            best, best_lag = c, lag
    return best, best_lag


def _segment_series(seg: Segment, track: FaceTrack) -> tuple[np.ndarray, np.ndarray] | None:
    ok = seg.found
    if ok.mean() < 0.8 or len(seg.times) < 16:
        return None
    m = mouth_opening(seg.landmarks[:, :, :2].astype(np.float64))
    idx = np.arange(len(m))
    m = np.interp(idx, idx[ok], m[ok])
    assert track.audio is not None
    loud = loudness_at(track.audio.samples, track.audio.sample_rate, seg.times, 2.0 / max(seg.fps, 1.0))
    # 40 dB under the loud frames is silence whatever the noise floor (digital zero reads -120 dB).
    return m, np.maximum(loud, np.percentile(loud, 95) - 40.0)


class AudioVisualCue:
    name = "audio_visual"
    description = "mouth opening against the speech envelope: coupling strength, lag, motion in silence"

    def measure(self, track: FaceTrack) -> CueMeasurement:
        if track.audio is None:
            return CueMeasurement(False, reason="the file has no audio track")
        if np.percentile(20 * np.log10(np.abs(track.audio.samples) + 1e-9), 99.5) < SILENT_DBFS:
            return CueMeasurement(False, reason="the audio track is silent")
        corrs, lags, dcorrs, quiet_ratio, series = [], [], [], [], []
        for seg in track.segments:
            s = _segment_series(seg, track)
            if s is None:
                continue
            m, loud = s
            max_lag = max(1, int(round(MAX_LAG_S * seg.fps)))
            c, lag = best_lag_corr(m, loud, max_lag)
            dc, _ = best_lag_corr(np.diff(m), np.diff(loud), max_lag)
            corrs.append(c)
            lags.append(lag / seg.fps)
            dcorrs.append(dc)
            top = np.percentile(loud, 95)
            quiet = loud < top - 30  # 30 dB under the loud frames: pauses
            speaking = loud > top - 12
            if quiet.sum() >= 4 and speaking.sum() >= 4:
                quiet_ratio.append(float(np.std(m[quiet]) / max(np.std(m[speaking]), 1e-6)))
            series.append({"t": seg.times.round(3).tolist(), "mouth": m.round(4).tolist(),
                           "loudness_db": loud.round(1).tolist()})  # fmt: skip
        if not corrs:
            return CueMeasurement(False, reason="no segment with a tracked face long enough")
        features = {
            "corr": float(np.mean(corrs)),
            "abs_lag_s": float(np.mean(np.abs(lags))),
            "onset_corr": float(np.mean(dcorrs)),
            "quiet_motion": float(np.mean(quiet_ratio)) if quiet_ratio else 1.0,
        }
        evidence = {
            "mouth_envelope_corr": round(features["corr"], 3),
            "lag_s": [round(x, 3) for x in lags],
            "onset_corr": round(features["onset_corr"], 3),
            "mouth_motion_in_pauses_vs_speech": round(features["quiet_motion"], 3) if quiet_ratio else None,
            "series": series[0] if series else None,
        }
        return CueMeasurement(True, features, evidence)
