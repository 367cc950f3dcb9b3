"""The photo's own open-mouth interior (its real teeth, tongue, shadow), measured once at rig time.

``generation.render.mouth`` re-lays it into each later opening; the mouth frame (corners axis and "down") is the
coordinate system both use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from generation.face import LANDMARKS, FaceAnalysis

__all__ = ["MouthSource", "mouth_frame"]


@dataclass(frozen=True)
class MouthSource:
    """The interior of a photo's open mouth (its real teeth, tongue, shadow), kept as a texture.

    Positions are in a mouth frame: ``axis`` along the inner-lip corners, ``down`` across; profiles are the inner
    upper and lower lip as tables over the lateral coordinate.

    Attributes:
        image: (1, 3, H, W) the original photo. center/axis/down: (2,) mouth frame in photo pixels.
        half: half the inner-lip width (px). lateral: (11,) table abscissae; upper/lower: (11,) lip offsets (px).
        split: share of the opening (from the upper lip) that belongs to the upper jaw: where the darkest row
            between upper and lower teeth is.
    """

    image: torch.Tensor
    center: np.ndarray
    axis: np.ndarray
    down: np.ndarray
    half: float
    lateral: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    split: float

    @classmethod
    def from_face(cls, face: FaceAnalysis, device: torch.device) -> MouthSource:
        lm = face.landmarks[:, :2].astype(np.float64)
        upper = lm[list(LANDMARKS.INNER_UPPER)]
        lower = lm[list(LANDMARKS.INNER_LOWER)]
        center, axis, down, half = mouth_frame(upper)
        img = torch.from_numpy(face.image).to(device=device, dtype=torch.float32)
        lateral, up_b, lo_b = (upper - center) @ axis, (upper - center) @ down, (lower - center) @ down
        return cls(
            image=img.permute(2, 0, 1).unsqueeze(0).contiguous(),
            center=center,
            axis=axis,
            down=down,
            half=half,
            lateral=lateral,
            upper=up_b,
            lower=lo_b,
            split=_teeth_split(face.image, center, axis, down, half, lateral, up_b, lo_b),
        )


def _teeth_split(image: np.ndarray, center: np.ndarray, axis: np.ndarray, down: np.ndarray, half: float,
                 lateral: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:  # fmt: skip
    """Where the upper teeth end, as a share of the opening from the upper lip.

    The upper teeth are the bright run of rows that starts near the upper lip (sampled over the mouth's central
    half); the rows after it (the gap, the lower teeth, the tongue) belong to the lower jaw. Without a bright run
    (no teeth showing) the opening is shared half and half.
    """
    order = np.argsort(lateral)
    cols = np.linspace(-0.5, 0.5, 15) * half  # (C,)
    top = np.interp(cols, lateral[order], upper[order])
    bottom = np.interp(cols, lateral[order], lower[order])
    depth = np.linspace(0.0, 1.0, 21)  # (R,)
    pts = center + cols[None, :, None] * axis + (top + depth[:, None] * (bottom - top))[..., None] * down  # (R, C, 2)
    ij = np.clip(np.round(pts).astype(int), 0, image.shape[0] - 1)
    luma = image[ij[..., 1], ij[..., 0]].astype(np.float64).mean(-1).mean(1)  # (R,)
    bright = luma > (luma.max() + luma.min()) / 2
    if luma.max() - luma.min() < 25 or not bright[:9].any():  # flat interior, or no teeth under the upper lip
        return 0.5
    start = int(np.argmax(bright[:9]))
    end = start
    while end + 1 < len(bright) and bright[end + 1]:
        end += 1
    return float(np.clip(depth[end] + 0.5 / 20, 0.3, 0.95))


def mouth_frame(upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre, axis, down, half width) of a mouth from its inner upper-lip points (corners first and last)."""
    left, right = upper[0], upper[-1]
    center = (left + right) / 2
    axis = (right - left) / max(float(np.linalg.norm(right - left)), 1e-6)
    down = np.array([-axis[1], axis[0]])
    return center, axis, down, max(float(np.linalg.norm(right - left)) / 2, 1.0)
