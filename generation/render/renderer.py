"""Renderer: a frame of one prepared face from a MotionState.

The mesh warp (``generation.render.warp``) moves the photo; inside the opened inner-lip contour
``generation.render.mouth`` draws the interior instead of stretching the lips, ``generation.render.eyes`` shades
closing lids, and the occluders found at rig time are pasted back on top, unmoved.
"""

from __future__ import annotations

import numpy as np
import torch

from generation.motion import MotionState
from generation.render.eyes import shade_closing_lids
from generation.render.mouth import draw_mouth_interior
from generation.render.rig import FaceRig
from generation.render.warp import Warper

__all__ = ["Renderer"]


class Renderer:
    """Draws frames of one prepared face. Thread-compatible (no shared mutable state across calls)."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self._warper = Warper(rig)
        self._pixels = self._warper.pixels  # (H, W, 2) pixel centres

    @torch.no_grad()
    def render(self, motion: MotionState) -> np.ndarray:
        """Render len(motion) frames. Returns (B, size, size, 3) uint8 RGB.

        Occluders found at rig time (a hand over the mouth, a hat over the eyes) stay on top, unmoved: the lips
        under a mostly covered mouth get no interior, a covered eye neither blinks nor looks around, and the
        photo's own occluder pixels are pasted over the finished frame.
        """
        occlusion = self.rig.occlusion
        if any(occlusion.eyes_covered):
            motion = motion.select(np.arange(len(motion)))  # a copy: the caller's motion is left as it was
            right, left = occlusion.eyes_covered
            if right:
                motion.blink_r[:] = 0.0
            if left:
                motion.blink_l[:] = 0.0
            motion.gaze_x[:] = 0.0  # both irises move together: one hidden, neither moves
            motion.gaze_y[:] = 0.0
        targets = self.rig.deform(motion)  # (B, V, 2)
        out = self._warper.frames(targets)
        if not occlusion.mouth_hidden:
            for b in range(len(targets)):
                draw_mouth_interior(self.rig, self._pixels, out[b], targets[b])
        blinking = np.nonzero(np.maximum(motion.blink_l, motion.blink_r) > 0.2)[0]
        if len(blinking):
            opened = motion.select(blinking)
            opened.blink_l[:] = 0.0
            opened.blink_r[:] = 0.0
            open_targets = self.rig.deform(opened)
            for j, b in enumerate(blinking):
                amounts = (float(motion.blink_r[b]), float(motion.blink_l[b]))
                shade_closing_lids(self.rig, out[b], targets[b], open_targets[j], amounts)
        if self.rig.occluder_alpha is not None:
            assert self.rig.occluder_rgb is not None
            y0, y1, x0, x1 = self.rig.occluder_box
            region = out[:, y0:y1, x0:x1]
            region.add_((self.rig.occluder_rgb - region).mul_(self.rig.occluder_alpha))
        return out.clamp_(0, 255).round_().to(torch.uint8).cpu().numpy()

    def warp(self, targets: np.ndarray, triangles: np.ndarray | None = None, source: np.ndarray | None = None
             ) -> np.ndarray:  # fmt: skip
        """The mesh warp alone (no mouth interior, lids or occluders): ``Warper.warp``, (B, size, size, 3) uint8."""
        return self._warper.warp(targets, triangles, source)
