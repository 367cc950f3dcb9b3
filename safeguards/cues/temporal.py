"""Temporal cue: does the face move like one rigid head with living eyes, and is its edge stable?

- Landmark jitter: frame-to-frame acceleration of the rigid points (eye corners, nose) after the head's similarity
  motion is removed, over the inter-ocular distance. Frame-by-frame generators jitter; warp animators are too smooth.
- Two head poses: the rotation of the inner face (eyes, nose, mouth corners) and of the outline, each from the 3D
  mesh, and how far the inner face slides against the outline; a pasted or re-synthesised inner face turns and
  slides differently from the head around it.
- Head motion: spread of yaw/pitch and angular speed (one-photo animators move little, or too regularly).
- Blinks: rate per minute and the eye-aspect spread (many generators blink rarely, or never).
- Background change: a camera's background changes between frames (noise, small shifts); a background animated
  from one photo is frozen.
- Boundary residual: after warping each crop onto the next with the landmarks' affine motion, the residual in a band
  on the face outline against the residual inside the face (blending seams flicker).
"""

from __future__ import annotations

import cv2
import numpy as np

from safeguards.cues.base import CueMeasurement
from safeguards.cues.geometry import (
    INNER,
    OUTLINE,
    STABLE,
    eye_aspect,
    head_rotation,
    inter_ocular,
    rotation_angles,
    similarity_align,
    similarity_fit,
)
from safeguards.cues.track import FaceTrack, Segment

MIN_FRAMES = 16


def _interp_nan(lm: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(lm[:, 0, 0])
    idx = np.arange(len(lm))
    flat = lm.reshape(len(lm), -1)
    out = np.stack([np.interp(idx, idx[ok], flat[ok, j]) for j in range(flat.shape[1])], 1)
    return out.reshape(lm.shape)


def landmark_jitter(lm: np.ndarray) -> float:
    """RMS second difference of the aligned stable points over the inter-ocular distance (per frame^2)."""
    ref = np.median(lm[:, STABLE, :2], axis=0)
    aligned = np.stack([similarity_align(f[STABLE, :2], ref) for f in lm])  # (T, S, 2)
    acc = aligned[2:] - 2 * aligned[1:-1] + aligned[:-2]
    return float(np.sqrt((acc**2).sum(-1).mean()) / max(float(np.median(inter_ocular(lm))), 1e-6))


def pose_series(lm: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """(T, 3) yaw/pitch/roll in degrees of the points ``idx`` relative to their median shape."""
    pts = lm[:, idx, :].astype(np.float64)
    ref = np.median(pts, axis=0)
    return np.stack([rotation_angles(head_rotation(p, ref)) for p in pts])


def inner_slip(lm: np.ndarray) -> float:
    """How far the inner face slides against the outline: align each frame's outline to the median outline, carry
    the inner points with it, and measure the RMS wander of their centroid (over the inter-ocular distance)."""
    ref_out = np.median(lm[:, OUTLINE, :2], axis=0)
    cents = []
    for f in lm:
        # The transform is fitted on the outline only; the inner points are carried along with it.
        cents.append(similarity_fit(f[OUTLINE, :2], ref_out)(f[INNER, :2]).mean(0))
    c = np.array(cents)
    return float(np.sqrt(((c - c.mean(0)) ** 2).sum(1).mean()) / max(float(np.median(inter_ocular(lm))), 1e-6))


def blink_count(ear: np.ndarray) -> int:
    """Dips of the eye aspect under 60 % of its median lasting at least one analysed frame."""
    closed = ear < 0.6 * np.median(ear)
    return int(np.sum(closed[1:] & ~closed[:-1]) + int(closed[0]))


def boundary_residual(seg: Segment, lm: np.ndarray, stride: int = 2) -> float | None:
    """log(residual on the outline band / residual inside the face) after landmark-affine motion compensation."""
    ratios = []
    for i in range(stride, len(lm), stride):
        a = cv2.cvtColor(seg.crops[i - stride], cv2.COLOR_RGB2GRAY).astype(np.float32)
        b = cv2.cvtColor(seg.crops[i], cv2.COLOR_RGB2GRAY).astype(np.float32)
        src, dst = np.ascontiguousarray(lm[i - stride, :, :2]), np.ascontiguousarray(lm[i, :, :2])
        m, _ = cv2.estimateAffinePartial2D(src, dst)
        if m is None:
            continue
        warped = cv2.warpAffine(a, m, a.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        res = np.abs(warped - b)
        hull = cv2.convexHull(lm[i, list(OUTLINE), :2].astype(np.int32))
        inside = np.zeros(a.shape, np.uint8)
        cv2.fillConvexPoly(inside, hull, 1)
        band = np.zeros(a.shape, np.uint8)
        cv2.polylines(band, [hull], True, 1, thickness=7)
        core = cv2.erode(inside, np.ones((15, 15), np.uint8))
        if band.sum() < 50 or core.sum() < 200:
            continue
        ratios.append(np.log((res[band > 0].mean() + 1.0) / (res[core > 0].mean() + 1.0)))
    return float(np.median(ratios)) if ratios else None


def background_change(seg: Segment, frame_width: int) -> float | None:
    """Median over frames of the mean absolute change (grey levels) of the whole-frame thumbnails outside the
    face's crop box.

    A camera keeps producing fresh noise and small shifts in the background; a background animated from one
    photo (or a still plate under a generated head) is frozen between frames."""
    if len(seg.thumbs) < 2 or any(t.shape != seg.thumbs[0].shape for t in seg.thumbs):
        return None
    thumbs = np.stack(seg.thumbs).astype(np.int16)  # (T, h, w, 3)
    h, w = thumbs.shape[1:3]
    f = w / max(frame_width, 1)  # thumbnail pixels per frame pixel
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    diffs = []
    change = np.abs(np.diff(thumbs, axis=0)).mean(-1)  # (T-1, h, w) mean over colour channels
    for i in range(1, len(thumbs)):
        x0, y0, side = seg.boxes[i] * f
        # int() truncation as the crop box is drawn in thumbnail pixels
        x0, y0, x1, y1 = max(int(x0), 0), max(int(y0), 0), max(int(x0 + side), 0), max(int(y0 + side), 0)
        outside = (xs < x0) | (xs >= x1) | (ys < y0) | (ys >= y1)
        if outside.sum() >= 100:
            diffs.append(float(change[i - 1][outside].mean()))
    return float(np.median(diffs)) if diffs else None


class TemporalCue:
    name = "temporal"
    description = "landmark jitter, inner-face vs outline head pose, head motion, blinks, boundary flicker"

    def measure(self, track: FaceTrack) -> CueMeasurement:
        segs = [s for s in track.segments if len(s.times) >= MIN_FRAMES and s.found.mean() >= 0.8]
        if not segs:
            return CueMeasurement(False, reason=f"needs >= {MIN_FRAMES} analysed frames with a tracked face")
        jit, dis, slip, yaw_sd, pitch_sd, speed, ear_sd, blinks, bres, bg = [], [], [], [], [], [], [], [], [], []
        seconds = 0.0
        yaw_plot = None
        for seg in segs:
            lm = _interp_nan(seg.landmarks.astype(np.float64))
            fps = seg.fps
            jit.append(landmark_jitter(lm))
            inner, outline = pose_series(lm, INNER), pose_series(lm, OUTLINE)
            d = (inner - inner.mean(0)) - (outline - outline.mean(0))
            dis.append(float(np.sqrt((d[:, :2] ** 2).mean())))
            slip.append(inner_slip(lm))
            yaw_sd.append(float(inner[:, 0].std()))
            pitch_sd.append(float(inner[:, 1].std()))
            speed.append(float(np.linalg.norm(np.diff(inner, axis=0), axis=1).mean() * fps))
            ear = eye_aspect(lm)
            ear_sd.append(float(ear.std() / max(np.median(ear), 1e-6)))
            blinks.append(blink_count(ear))
            seconds += len(seg.times) / fps
            r = boundary_residual(seg, lm.astype(np.float32))
            if r is not None:
                bres.append(r)
            change = background_change(seg, track.width)
            if change is not None:
                bg.append(change)
            if yaw_plot is None:
                yaw_plot = {"t": seg.times.round(3).tolist(), "yaw_inner": inner[:, 0].round(2).tolist(),
                            "yaw_outline": outline[:, 0].round(2).tolist()}  # fmt: skip
        rate = 60.0 * sum(blinks) / max(seconds, 1e-6)
        features = {
            "jitter": float(np.log(np.mean(jit) + 1e-4)),
            "pose_disagreement_deg": float(np.mean(dis)),
            "inner_slip": float(np.log(np.mean(slip) + 1e-3)),
            "yaw_sd_deg": float(np.mean(yaw_sd)),
            "pitch_sd_deg": float(np.mean(pitch_sd)),
            "angular_speed_dps": float(np.mean(speed)),
            "ear_spread": float(np.mean(ear_sd)),
            "blinks_per_min": float(min(rate, 60.0)),
            "boundary_residual": float(np.mean(bres)) if bres else 0.0,
            "background_change": float(np.log(np.mean(bg) + 0.05)) if bg else float(np.log(0.05)),
        }
        evidence = {
            "landmark_jitter_iod": round(float(np.mean(jit)), 5),
            "pose_disagreement_deg": round(features["pose_disagreement_deg"], 3),
            "inner_face_slip_iod": round(float(np.mean(slip)), 4),
            "yaw_sd_deg": round(features["yaw_sd_deg"], 2),
            "angular_speed_deg_per_s": round(features["angular_speed_dps"], 2),
            "blinks_per_min": round(rate, 1),
            "boundary_residual_log_ratio": round(features["boundary_residual"], 3),
            "background_change_grey_levels": round(float(np.mean(bg)), 3) if bg else None,
            "yaw": yaw_plot,
        }
        return CueMeasurement(True, features, evidence)
