"""Render settings: one frozen dataclass every render stage reads (rig set-up, deform, mouth, eyes, closing)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RenderConfig"]


@dataclass(frozen=True)
class RenderConfig:
    """Args:
    ring_scale: anchor ring radius relative to the face oval (around the head, in hair/neck).
    ring_follow: share of the oval's motion the ring follows (0 = fixed, 1 = rigid with the face).
    border_anchors: anchors per image side (fixed: the background stays still).
    teeth_height: visible upper-teeth height (IOD units) when the mouth is open enough.
    lower_teeth_height: visible lower-teeth height (IOD units).
    feather_px: softness of the mouth-interior edge.
    lid_close: how far the upper lid travels to the lower lid at blink = 1.
    brow_raise: brow lift (IOD units) at brow = 1.
    lash_strip: height (IOD) of the strip above each upper-lid point that a blink carries down unstretched
        (the lashes); only the lid skin above it stretches to cover the eye.
    open_mouth_gap: a photo whose inner-lip gap (IOD) exceeds this is closed once at rig time, and its own
        mouth interior (teeth, tongue) is kept as the texture of every later opening.
    still_background: composite the warped person over the photo's own background (selfie segmentation), so
        only the person moves; background a move reveals (behind hair, a turned cheek, a shoulder) is filled
        from a clean plate: the photo's background with the person inpainted away.
    own_teeth_max: the longest stretch (IOD) of the photo's interior shown hanging from the upper lip: about the
        upper incisors' exposure; below it a wider opening shows the cavity, not the photo's lower rows again.
    occlusion: find what covers the mouth or eyes (``generation.occlusion``: a hand, a cup, a hat brim) and keep
        it on top in every frame; a mostly covered mouth is not opened, a covered eye not blinked.
    occluder_follows_head: move the part of an occluder that is on the face (a hand, a glove) with the head pose
        (yaw, pitch, roll, shift, scale) as a flat plane at its depth, never with the face's expression (jaw,
        lips, lids): the face and the hand in front of it turn as one, and its far end (a wrist) blends into the
        body with the ring anchors. Held objects (a microphone on its stand) stay either way. False keeps all of
        it where the photo has it (the face then slides under it: a seam past ~10 degrees).
    rebuild_closed_lips: when closing an open photo mouth, refill whatever of the interior lies inside the mesh's
        lip contours (teeth, tongue) with the lips' own texture first; False closes by the warp alone (the naive
        path, kept as the tests' negative control).
    """

    ring_scale: float = 1.45
    ring_follow: float = 0.6
    border_anchors: int = 8
    teeth_height: float = 0.085
    lower_teeth_height: float = 0.035
    feather_px: float = 0.7
    lid_close: float = 0.97
    brow_raise: float = 0.07
    head_pivot_depth: float = 0.6
    lash_strip: float = 0.06
    open_mouth_gap: float = 0.06
    still_background: bool = True
    own_teeth_max: float = 0.11
    occlusion: bool = True
    occluder_follows_head: bool = True
    rebuild_closed_lips: bool = True
