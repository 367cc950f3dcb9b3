"""Renderer: a frame of one prepared face from a MotionState.

The mesh warp (``generation.render.warp``) moves the photo; inside the opened inner-lip contour
``generation.render.mouth`` draws the interior instead of stretching the lips, ``generation.render.eyes`` shades
closing lids, and the occluders found at rig time are pasted back on top, moved by the head pose alone.
"""

from __future__ import annotations

import numpy as np
import torch

from generation.motion import MotionState
from generation.render.deform import N_MESH, deform_flat
from generation.render.eyes import shade_closing_lids
from generation.render.mouth import draw_mouth_interior
from generation.render.rig import FaceRig
from generation.render.warp import Warper

__all__ = ["Renderer"]

# The rigid part of a MotionState: what moves a hand or a microphone held in front of the face along with it.
_HEAD_POSE = ("yaw", "pitch", "roll", "tx", "ty", "scale")


def _head_moves(motion: MotionState) -> bool:
    """Whether any frame's head pose differs from the photo's (scale 1, everything else 0)."""
    rest = {name: (1.0 if name == "scale" else 0.0) for name in _HEAD_POSE}
    return any(bool(np.any(np.asarray(getattr(motion, name)) != rest[name])) for name in _HEAD_POSE)


class Renderer:
    """Draws frames of one prepared face. Thread-compatible (no shared mutable state across calls)."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self._warper = Warper(rig)
        self._pixels = self._warper.pixels  # (H, W, 2) pixel centres
        # The vertices ``deform_flat`` moves as one plane (mesh and lash strip; not the ring or border anchors).
        self._rigid = np.zeros(rig.n_vertices, dtype=bool)
        self._rigid[:N_MESH] = True
        lash = N_MESH + len(rig.ring)
        self._rigid[lash : lash + len(rig.lash_parent)] = True

    @torch.no_grad()
    def render(self, motion: MotionState) -> np.ndarray:
        """Render len(motion) frames. Returns (B, size, size, 3) uint8 RGB.

        Occluders found at rig time (a hand over the mouth, a hat over the eyes) stay on top: the lips under a
        mostly covered mouth get no interior, a covered eye neither blinks nor looks around, and the photo's own
        occluder pixels, moved by the head pose alone, are pasted over the finished frame.
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
        if self.rig.occluder_paste is not None:
            self._occluder_on_top(out, motion)
        return out.clamp_(0, 255).round_().to(torch.uint8).cpu().numpy()

    def occluder_targets(self, motion: MotionState) -> np.ndarray | None:
        """(B, V, 2) vertex positions that carry the occluder layer: the head pose of ``motion`` alone (no jaw,
        lips, lids or brows) moving a plane at the occluder's depth (``deform_flat``), or None where the whole
        occluder stays where the photo has it (no turn, nothing on the face that follows it, or
        ``RenderConfig.occluder_follows_head`` off)."""
        if self.rig.occluder_layer is None or not _head_moves(motion):
            return None
        return deform_flat(self.rig, motion, self.rig.occluder_depth)

    def _occluder_on_top(self, out: torch.Tensor, motion: MotionState) -> None:
        """Paste the photo's occluder pixels over the finished frames ``out`` (B, H, W, 3), in place.

        A hand over the mouth is in front of the face and turns with it; kept still while the face turned under
        it, the nose slid over the fingertips at 20 degrees. So the part of the occluder that is on the face
        (``Occlusion.follows``) is warped by the head pose alone, as a flat plane at its depth (``deform_flat``):
        it moves as one piece with the face it touches, not shaped by the cheek's relief, and where it leaves
        the face (a wrist, an arm) it follows the ring anchors as the neck and shoulders do. Only the expression
        (jaw, lips) moves the face under it. A held object (a microphone on its stand) stays where it is.
        """
        rig = self.rig
        targets = self.occluder_targets(motion)
        if targets is None:
            assert rig.occluder_paste is not None
            rig.occluder_paste.onto(out)
            return
        if rig.still_paste is not None:
            rig.still_paste.onto(out)
        assert rig.occluder_layer is not None
        for b in range(len(targets)):  # frame by frame: each frame's box (and so its pixels) is its own
            # The occluder can move as far as any vertex does: the box grows by that much.
            reach = int(np.ceil(np.abs(targets[b] - rig.source_vertices).max())) + 2
            y0, y1, x0, x1 = rig.follow_box
            y0, x0 = max(y0 - reach, 0), max(x0 - reach, 0)
            y1, x1 = min(y1 + reach, rig.size), min(x1 + reach, rig.size)
            source = self._warper.source_map_rigid(targets[b : b + 1], self._rigid, box=(y0, y1, x0, x1), step=4)
            layer = self._warper.sample(rig.occluder_layer, source)[0]  # (h, w, 4)
            region = out[b, y0:y1, x0:x1]
            region.add_((layer[..., :3] - region).mul_(layer[..., 3:]))

    def warp(self, targets: np.ndarray, triangles: np.ndarray | None = None, source: np.ndarray | None = None
             ) -> np.ndarray:  # fmt: skip
        """The mesh warp alone (no mouth interior, lids or occluders): ``Warper.warp``, (B, size, size, 3) uint8."""
        return self._warper.warp(targets, triangles, source)
