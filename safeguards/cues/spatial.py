"""Spatial cue: do the face's pixels come from the same camera and the same processing as the rest of the frame?

- Noise residual: a generated or pasted face is smoother (or noisier) than the sensor noise around it. We compare
  the robust noise level (median absolute high-pass residual) of the cheeks and forehead with flat background
  areas of the same frame, and the same for the Laplacian sharpness.
- Mouth against eyes: the Laplacian energy of the mouth region over that of the eyes (re-synthesised mouths are
  blurrier than the eyes a camera resolved alike).
- Spectrum: the face's azimuthally averaged power spectrum, its high-frequency share and log-log slope (upsampled
  and decoder-generated faces lose the top octave), and periodic peaks in the residual's spectrum left by
  upsampling layers (transposed convolutions, 2x/4x resizes).

Uses a few full-resolution frames; applies to single images too.
"""

from __future__ import annotations

import cv2
import numpy as np

from safeguards.cues.base import CueMeasurement
from safeguards.cues.geometry import CHEEK_LEFT, CHEEK_RIGHT, FOREHEAD, OUTLINE, inter_ocular
from safeguards.cues.track import FaceTrack

MIN_IOD_PX = 24.0  # faces smaller than this carry too few pixels for texture statistics


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _residual(gray: np.ndarray) -> np.ndarray:
    """High-pass residual that cancels smooth image structure (Immerkaer's noise operator)."""
    return cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL)


def _noise_sigma(residual: np.ndarray) -> float:
    """Immerkaer's estimate of the noise standard deviation from the operator's mean absolute response."""
    return float(np.sqrt(np.pi / 2) * np.abs(residual).mean() / 6.0) if residual.size else float("nan")


def _masks(shape: tuple[int, int], lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(skin, background) boolean masks: skin patches, and flat areas well away from the head."""
    skin = np.zeros(shape, np.uint8)
    for idx in (FOREHEAD, CHEEK_LEFT, CHEEK_RIGHT):
        cv2.fillConvexPoly(skin, cv2.convexHull(lm[list(idx), :2].astype(np.int32)), 1)
    head = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(head, cv2.convexHull(lm[list(OUTLINE), :2].astype(np.int32)), 1)
    iod = float(inter_ocular(lm))
    k = max(3, int(1.5 * iod)) | 1
    near_head = cv2.dilate(head, np.ones((k, k), np.uint8))
    return skin > 0, near_head == 0


def radial_spectrum(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged log power of a square grey patch. Returns (frequency in cycles/px, log10 power)."""
    n = patch.shape[0]
    win = np.outer(np.hanning(n), np.hanning(n))
    p = np.abs(np.fft.fftshift(np.fft.fft2((patch - patch.mean()) * win))) ** 2
    y, x = np.indices(p.shape) - n // 2
    r = np.sqrt(x**2 + y**2).astype(int)
    radial = np.bincount(r.ravel(), p.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(len(radial)) / n
    keep = (f > 0.02) & (f <= 0.5)
    return f[keep], np.log10(radial[keep] + 1e-9)


def periodic_peak(gray: np.ndarray) -> float:
    """Strongest isolated peak in the high-frequency spectrum of the noise residual (log10 over the local median):
    resampling by 2x or 4x leaves peaks at 1/2 and 1/4 cycles per pixel."""
    h, w = gray.shape
    n = min(256, h, w) // 2 * 2
    if n < 64:
        return 0.0
    y0, x0 = (h - n) // 2, (w - n) // 2
    res = _residual(gray[y0 : y0 + n, x0 : x0 + n])
    p = np.log10(np.abs(np.fft.fftshift(np.fft.fft2(res * np.outer(np.hanning(n), np.hanning(n))))) ** 2 + 1e-9)
    med = cv2.medianBlur(p.astype(np.float32), 5)
    y, x = np.indices(p.shape) - n // 2
    high = np.sqrt(x**2 + y**2) > n * 0.15
    return float((p - med)[high].max())


MOUTH = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
EYES = ((33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
        (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249))  # fmt: skip


def mouth_eye_sharpness(track: FaceTrack, per_segment: int = 12) -> float | None:
    """log(Laplacian energy of the mouth / that of the eyes) on the face crops, median over frames.

    Lip-sync tools and talking-head generators re-synthesise the mouth (blurry teeth, smeared lips) and leave the
    eyes from the source, or draw both at the decoder's resolution; a camera resolves both alike."""
    ratios = []
    for seg in track.segments:
        idx = np.flatnonzero(seg.found)
        for i in idx[np.linspace(0, len(idx) - 1, min(per_segment, len(idx))).astype(int)] if len(idx) else []:
            lm = seg.landmarks[i]
            gray = cv2.cvtColor(seg.crops[i], cv2.COLOR_RGB2GRAY)
            lap = cv2.Laplacian(gray, cv2.CV_32F)
            mouth = np.zeros(gray.shape, np.uint8)
            cv2.fillConvexPoly(mouth, cv2.convexHull(lm[list(MOUTH), :2].astype(np.int32)), 1)
            eyes = np.zeros(gray.shape, np.uint8)
            for eye in EYES:
                cv2.fillConvexPoly(eyes, cv2.convexHull(lm[list(eye), :2].astype(np.int32)), 1)
            if mouth.sum() < 30 or eyes.sum() < 30:
                continue
            ratios.append(np.log((np.mean(lap[mouth > 0] ** 2) + 1.0) / (np.mean(lap[eyes > 0] ** 2) + 1.0)))
    return float(np.median(ratios)) if ratios else None


class SpatialCue:
    name = "spatial"
    description = "noise residual and sharpness of the face against the background; spectrum and upsampling peaks"

    def measure(self, track: FaceTrack) -> CueMeasurement:
        pairs = [(f, lm) for f, lm in zip(track.full_frames, track.full_landmarks, strict=False) if lm is not None]
        pairs = [(f, lm) for f, lm in pairs if float(inter_ocular(lm)) >= MIN_IOD_PX]
        if not pairs:
            return CueMeasurement(False, reason=f"no face of at least {MIN_IOD_PX:.0f} px between the eyes")
        mouth_eyes = mouth_eye_sharpness(track)
        noise, sharp, hf, slope, peak, face_noise = [], [], [], [], [], []
        for frame, lm in pairs:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
            skin, bg = _masks(gray.shape, lm)
            res = _residual(gray)
            lap = cv2.Laplacian(gray, cv2.CV_32F)
            # Flat background only: texture would read as noise.
            grad = cv2.GaussianBlur(np.abs(lap), (0, 0), 3)
            flat = bg & (grad < np.percentile(grad[bg], 50)) if bg.sum() > 500 else None
            n_face = _noise_sigma(res[skin])
            face_noise.append(np.log(n_face + 0.05))
            if flat is not None and flat.sum() > 200:
                noise.append(np.log((n_face + 0.05) / (_noise_sigma(res[flat]) + 0.05)))
                sharp.append(np.log((lap[skin].var() + 1.0) / (lap[flat].var() + 1.0)))
            iod = float(inter_ocular(lm))
            cx, cy = lm[list(OUTLINE), :2].mean(0)
            side = int(1.6 * iod) // 2 * 2
            x0, y0 = int(cx - side / 2), int(cy - side / 2)
            patch = gray[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side]
            if min(patch.shape) >= 32:
                patch = cv2.resize(patch, (96, 96), interpolation=cv2.INTER_AREA)
                f, logp = radial_spectrum(patch)
                hf.append(float(np.mean(logp[f > 0.25]) - np.mean(logp[(f > 0.05) & (f <= 0.25)])))
                slope.append(float(np.polyfit(np.log10(f), logp, 1)[0]))
            peak.append(periodic_peak(gray))
        features = {
            "face_noise": float(np.mean(face_noise)),
            "noise_ratio": float(np.mean(noise)) if noise else 0.0,
            "sharpness_ratio": float(np.mean(sharp)) if sharp else 0.0,
            "hf_share": float(np.mean(hf)) if hf else 0.0,
            "spectral_slope": float(np.mean(slope)) if slope else 0.0,
            "periodic_peak": float(np.mean(peak)),
            "mouth_eye_sharpness": mouth_eyes if mouth_eyes is not None else 0.0,
        }
        evidence = {
            "face_vs_background_noise_log_ratio": round(features["noise_ratio"], 3) if noise else None,
            "face_vs_background_sharpness_log_ratio": round(features["sharpness_ratio"], 3) if sharp else None,
            "face_high_frequency_share": round(features["hf_share"], 3),
            "face_spectral_slope": round(features["spectral_slope"], 3),
            "upsampling_peak": round(features["periodic_peak"], 3),
            "mouth_vs_eyes_sharpness_log_ratio": None if mouth_eyes is None else round(mouth_eyes, 3),
            "frames": len(pairs),
        }
        return CueMeasurement(True, features, evidence)
