"""Closed-lid shading: the skin a blink pulls over the eye is lit like skin, not like the socket it came from.

The warp closes an eye by stretching the upper lid's own skin (between the lash strip and the crease) down over
the eyeball, so a closed eye keeps the person's lid texture and real lash line. Where that skin lies in shadow
(deep-set eyes) or is a thick drawn line (anime, paintings), the stretched result reads as an open eye in shade.
A real closing lid is a convex sheet over the eyeball that catches the light like the cheek below the eye, so
the covered area is pulled toward that skin's colour, keeping the warped texture's detail and the lash line.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from generation.face import LANDMARKS
from generation.render.rig import FaceRig

__all__ = ["shade_closing_lids"]

_EYES = (LANDMARKS.RIGHT_LID_PAIRS, LANDMARKS.LEFT_LID_PAIRS)
_CREASES = (LANDMARKS.RIGHT_LID_CREASE, LANDMARKS.LEFT_LID_CREASE)


def shade_closing_lids(rig: FaceRig, frame: torch.Tensor, closed: np.ndarray, opened: np.ndarray,
                       amounts: tuple[float, float]) -> None:  # fmt: skip
    """Pull the lid skin covering each eye toward ``rig.lid_tone``, in place.

    Args:
        frame: (H, W, 3) float frame.
        closed: (V, 2) this frame's vertices; opened: the same frame's vertices with the eyes open.
        amounts: blink closure of the right and left eye, 0..1.
    """
    cfg = rig.config
    strip = cfg.lash_strip * rig.iod
    for pairs, crease, amount in zip(_EYES, _CREASES, amounts, strict=True):
        weight = 0.85 * float(np.clip((amount - 0.2) / 0.6, 0.0, 1.0))
        if weight <= 0.0:
            continue
        upper = [p[0] for p in pairs]
        # From the crease (a closing lid unfolds it: its shadow fades) down to the lashes. The crease points may
        # sit below the open lid near the corners, so the top takes whichever is higher at each point.
        folded = closed[list(crease)]
        top = np.where(((folded - opened[upper]) @ rig.v)[:, None] < 0, folded, opened[upper])
        # The covered area ends a lash strip above the moving lid margin: the lashes keep their own colours.
        margin = closed[upper] - strip * rig.v
        polygon = np.concatenate([top, margin[::-1]])
        lo = np.floor(polygon.min(0) - 4).astype(int).clip(0, rig.size - 1)
        hi = np.ceil(polygon.max(0) + 4).astype(int).clip(1, rig.size)
        if np.any(hi - lo < 3):
            continue
        mask = np.zeros((hi[1] - lo[1], hi[0] - lo[0]), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round((polygon - lo) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        soft = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.015 * rig.iod)).astype(np.float32) / 255.0
        if soft.max() <= 0.0:
            continue
        region = frame[lo[1] : hi[1], lo[0] : hi[0]]  # (h, w, 3) view
        w = torch.from_numpy(soft).to(region.device)[..., None] * weight
        # Shift the local mean to the tone and keep the detail around it (pores, lashes' shadows, paint).
        blur = F.avg_pool2d(region.permute(2, 0, 1)[None], 5, stride=1, padding=2, count_include_pad=False)
        detail = region - blur[0].permute(1, 2, 0)
        tone = torch.as_tensor(rig.lid_tone, dtype=region.dtype, device=region.device)
        region.add_(((tone + 0.6 * detail) - region) * w)
