"""Closing an open photo mouth: no tongue squeezed between the closed lips.

The example portrait smiles with her teeth showing. A red tongue is painted into the lower half of her mouth
opening, reaching onto the lower lip's inner edge: the mesh then takes part of the tongue for lip, which is how a
laughing or screaming photo fails. The closed mouth must show none of it between the lips; the naive closing
(the warp alone, ``rebuild_closed_lips=False``) shows it, which is the negative control.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from generation import PreparedFace, TalkingFaceGenerator, load_image
from generation.face import LANDMARKS, detect_landmarks
from generation.motion import MotionState
from generation.render import FaceRig, RenderConfig, Renderer, build_rig

TONGUE = (200, 40, 70)  # saturated red-pink, far from the example's muted lip colour


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.asarray(rgb, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(
        np.asarray(rgb).shape).astype(np.float64)  # fmt: skip


@pytest.fixture(scope="module")
def tongue_photo(example_photo: Path) -> np.ndarray:
    photo = load_image(example_photo.read_bytes(), max_pixels=50_000_000)
    lm = detect_landmarks(photo)
    assert lm is not None
    iod = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    upper, lower = lm[list(LANDMARKS.INNER_UPPER), :2], lm[list(LANDMARKS.INNER_LOWER), :2]
    middle = (upper + lower) / 2
    # From the middle of the opening down onto the lower lip's inner edge, corners left out.
    tongue = np.vstack([middle[2:-2], (lower[2:-2] + np.array([0.0, 0.012 * iod]))[::-1]])
    image = photo.copy()
    cv2.fillPoly(image, [np.round(tongue * 16).astype(np.int32)], TONGUE, cv2.LINE_AA, shift=4)
    return image


def _tongue_between_lips(frame: np.ndarray, rig: FaceRig, verts: np.ndarray) -> int:
    """Tongue-coloured pixels (within 25 Lab units of TONGUE, nearer to it than to the lips) in a band of 0.08 IOD
    around the closed lip line, corners excluded."""
    line = verts[list(LANDMARKS.INNER_UPPER[1:-1])]
    band = np.zeros(frame.shape[:2], dtype=np.uint8)
    cv2.polylines(band, [np.round(line).astype(np.int32)], False, 1, max(3, int(0.08 * rig.iod)))
    lab = _lab(frame)
    to_tongue = np.linalg.norm(lab - _lab(np.array(TONGUE)), axis=-1)
    to_lip = np.linalg.norm(lab - _lab(np.round(rig.lip_color)), axis=-1)
    return int(((to_tongue < 25) & (to_tongue < to_lip) & band.astype(bool)).sum())


def _closed_frames(rig: FaceRig) -> tuple[np.ndarray, np.ndarray]:
    """Closed-mouth frames (jaw at rest; with a turn, a nod and a smile) and their vertices."""
    motion = MotionState.neutral(4)
    motion.yaw[1] = np.radians(10)
    motion.pitch[2] = np.radians(-6)
    motion.smile[3] = 0.5
    return Renderer(rig).render(motion), rig.deform(motion)


def test_closed_lips_show_no_tongue(generator: TalkingFaceGenerator, tongue_photo: np.ndarray) -> None:
    prepared = generator.prepare(tongue_photo)
    rig = prepared.rig
    assert rig.mouth_source is not None  # the open mouth was closed at rig time
    assert np.linalg.norm(_lab(np.array(TONGUE)) - _lab(np.round(rig.lip_color))) > 30  # a colour the lips lack
    frames, verts = _closed_frames(rig)
    rebuilt = [_tongue_between_lips(f, rig, v) for f, v in zip(frames, verts, strict=True)]
    assert max(rebuilt) <= 5, rebuilt
    # Negative control: the warp alone squeezes the painted tongue between the lips.
    naive_rig = build_rig(prepared.face, RenderConfig(rebuild_closed_lips=False), rig.device)
    frames, verts = _closed_frames(naive_rig)
    naive = [_tongue_between_lips(f, naive_rig, v) for f, v in zip(frames, verts, strict=True)]
    assert min(naive) > 100, naive


def test_opening_again_shows_the_photos_own_interior(generator: TalkingFaceGenerator,
                                                     tongue_photo: np.ndarray) -> None:  # fmt: skip
    """The tongue is not lost: a wide opening draws the photo's own interior, tongue included."""
    prepared: PreparedFace = generator.prepare(tongue_photo)
    rig = prepared.rig
    motion = MotionState.neutral(1)
    motion.jaw_open[:] = 0.25
    frame = Renderer(rig).render(motion)[0]
    verts = rig.deform(motion)[0]
    opening = np.zeros(frame.shape[:2], dtype=np.uint8)
    contour = np.vstack([verts[list(LANDMARKS.INNER_UPPER)], verts[list(LANDMARKS.INNER_LOWER)][::-1]])
    cv2.fillPoly(opening, [np.round(contour).astype(np.int32)], 1)
    to_tongue = np.linalg.norm(_lab(frame) - _lab(np.array(TONGUE)), axis=-1)
    assert ((to_tongue < 25) & opening.astype(bool)).sum() > 100
