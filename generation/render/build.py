"""Building a face rig: set up the prepared photo, and close its mouth once when the photo's is open.

This is the one place that knows both the rig and the closing (which draws with the mesh warp), so neither has to
import the other.
"""

from __future__ import annotations

import torch

from generation.face import FaceAnalysis
from generation.render.closing import closed_face
from generation.render.config import RenderConfig
from generation.render.mouth_source import MouthSource
from generation.render.rig import FaceRig

__all__ = ["build_rig"]


def build_rig(face: FaceAnalysis, config: RenderConfig, device: torch.device) -> FaceRig:
    """The rig every frame of ``face`` is drawn from.

    An open source mouth would stretch its tongue and palate into a tube on every frame: it is closed once (lips
    meet, the chin comes up), frames animate from that closed base, and the photo's own interior (its real teeth)
    is kept as the texture drawn into later openings.
    """
    rig = FaceRig(face, config, device)
    if rig.needs_closing:
        # From the rig's base, not ``face``: an occluder has been painted out of it.
        source = MouthSource.from_face(rig.base, device)
        rig.rebase(closed_face(rig, rig.base), source)
    return rig
