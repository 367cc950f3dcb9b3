"""Rendering a prepared photo, as stages that import one way.

config -> deform -> mouth_source -> rig -> mouth, eyes -> warp -> closing -> build -> renderer
(``tests/generation/test_import_order.py`` keeps it so). ``build_rig`` prepares a photo once; ``Renderer`` draws
frames of it from a MotionState.
"""

from generation.render.build import build_rig
from generation.render.config import RenderConfig
from generation.render.renderer import Renderer
from generation.render.rig import FaceRig

__all__ = ["FaceRig", "RenderConfig", "Renderer", "build_rig"]
