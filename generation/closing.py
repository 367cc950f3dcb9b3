"""Closing a photo's open mouth once, at rig time, so every frame animates from closed lips.

An open source mouth (a smile with teeth, an 'O', a yawn) would otherwise stretch its tongue and palate into a
tube on every frame. The lips are brought together by a spline-spread warp of the mesh, the opening is inpainted
out of the lips first so no cavity shows along the closed line, and the photo's own interior is kept elsewhere
(``generation.mouth.MouthSource``) as the texture of later openings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import Delaunay

from generation.deform import N_MESH
from generation.face import LANDMARKS, FaceAnalysis
from generation.render import Renderer

if TYPE_CHECKING:
    from generation.rig import FaceRig

__all__ = ["closed_face"]


def closed_face(rig: FaceRig, face: FaceAnalysis) -> FaceAnalysis:
    """The photo with its mouth closed (``_closing_targets``), drawn without an interior from a copy whose
    opening is inpainted out of the lips, then given a relaxed upper lip and a soft seam.

    Landmarks are the warped ones (depth unchanged), so no second mesh run is needed.
    """
    targets = rig.deform(rig.rest_state(1))  # (1, V, 2): the photo's own pose
    targets[0, :N_MESH] = _closing_targets(rig)
    # Lips meet exactly, point on point: then every triangle between them is degenerate and draws nothing.
    targets[0, list(LANDMARKS.INNER_LOWER)] = targets[0, list(LANDMARKS.INNER_UPPER)]
    # Triangulate the closed pose itself: triangles of a mesh built on the open photo would fold when the lips
    # travel a whole mouth height; triangles between the meeting lips simply have no area here.
    triangles = Delaunay(targets[0]).simplices.astype(np.int64)  # (K, 3)
    image = Renderer(rig).warp(targets, triangles, source=_lips_over_opening(face))[0]  # (H, W, 3) uint8
    image = _relaxed_upper_lip(image, targets[0, :N_MESH])
    image = _lip_seam(image, targets[0, list(LANDMARKS.INNER_UPPER)], rig.lip_color, rig.iod)
    landmarks = face.landmarks.copy()
    landmarks[:, :2] = targets[0, :N_MESH]
    return FaceAnalysis(image=image, landmarks=landmarks.astype(np.float32), crop_box=face.crop_box)


def _lips_over_opening(face: FaceAnalysis) -> np.ndarray:
    """The photo with its mouth opening filled from the lips around it (inpainted), for drawing the closed mouth.

    The inner-lip landmarks sit a pixel or two inside the dark opening; sampled as they are, the closed lips would
    show a jagged dark seam of cavity along the line where they meet.
    """
    lm2 = face.landmarks[:, :2]
    shape = face.image.shape[:2]
    opening = _band(shape, lm2, LANDMARKS.INNER_UPPER, LANDMARKS.INNER_LOWER, line=cv2.LINE_8) > 0
    lips = (_band(shape, lm2, LANDMARKS.OUTER_UPPER, LANDMARKS.OUTER_LOWER, line=cv2.LINE_8) > 0) & ~opening
    # The mesh may put a lip contour on the tongue or the teeth: the shadow between them and the real lip edge
    # then lies inside the "lip". Dark pixels of the lip band are filled too.
    luma = face.image.astype(np.float32).mean(-1)
    dark = lips & (luma < 0.8 * float(np.median(luma[lips]))) if lips.any() else np.zeros_like(lips)
    # Only shadow that touches the opening: the dark rim of the lips' outer edge is the lips' own shading.
    _, labels = cv2.connectedComponents((opening | dark).astype(np.uint8), connectivity=8)
    inside = np.unique(labels[opening])
    fill = np.isin(labels, inside[inside > 0])
    mask = cv2.dilate(fill.astype(np.uint8) * 255, np.ones((7, 7), np.uint8))
    return cv2.inpaint(face.image, mask, 5, cv2.INPAINT_TELEA)


def _relaxed_upper_lip(image: np.ndarray, landmarks: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """The closed mouth's upper lip given back the colour of the lower one, its own shading kept.

    An upper lip stretched over a wide-open mouth is pressed thin and pale; closed, it relaxes and fills with
    colour again. Left pale, a thin skin-coloured upper lip over the dark seam reads as upper teeth in a slightly
    open mouth. The lip's mean colour moves ``strength`` of the way to the lower lip's; detail is kept.
    """
    upper = _band(image.shape[:2], landmarks, LANDMARKS.OUTER_UPPER, LANDMARKS.INNER_UPPER)
    lower = _band(image.shape[:2], landmarks, LANDMARKS.INNER_LOWER, LANDMARKS.OUTER_LOWER)
    if (upper > 127).sum() < 4 or (lower > 127).sum() < 4:
        return image
    pixels = image.astype(np.float32)
    shift = np.median(pixels[lower > 127], axis=0) - np.median(pixels[upper > 127], axis=0)
    weight = cv2.GaussianBlur(upper, (5, 5), 0).astype(np.float32)[..., None] / 255.0 * strength
    return np.round(pixels + shift * weight).clip(0, 255).astype(np.uint8)


def _lip_seam(image: np.ndarray, line: np.ndarray, lip_color: np.ndarray, iod: float) -> np.ndarray:
    """Draw the soft dark line where closed lips meet (the shadow between them), over the warp's thin slivers.

    Args:
        line: (N, 2) the closed inner-lip contour, corner to corner.
    """
    width = max(2, int(round(iod / 50)))
    seam = np.zeros(image.shape[:2], dtype=np.uint8)
    # Centred half a pixel above the line: the slivers lie on the upper lip's side of it.
    raised = line - np.array([0.0, 0.5])
    cv2.polylines(seam, [np.round(raised * 16).astype(np.int32)], False, 255, width, cv2.LINE_AA, shift=4)
    alpha = cv2.GaussianBlur(seam, (5, 5), 0).astype(np.float32)[..., None] / 255 * 0.5
    dark = np.asarray(lip_color, dtype=np.float32) * 0.5
    return np.round(image * (1 - alpha) + dark * alpha).astype(np.uint8)


def _closing_targets(rig: FaceRig) -> np.ndarray:
    """(478, 2) landmark positions that close the photo's open mouth.

    The lips meet near the line through the inner-lip corners: the upper lip comes down to it (an 'O' or a yawn
    raises it) and the lower lip rises the rest of the way, each lip as one body (outer contour with inner). The
    chin rises with the lower lip, less toward the jaw angles; everything above the nose base stays. A thin-plate
    spline spreads these known moves over the other landmarks (the lips' inner rings, cheeks, chin skin), so they
    follow smoothly instead of folding where a contour runs steeply, as in a round 'O'.
    """
    lm2 = rig.landmarks[:, :2]
    rel = lm2 - rig.mouth_center
    a = rel @ rig.u / rig.mouth_half_width
    b = rel @ rig.v  # px below the mouth line
    inner_up, inner_lo = list(LANDMARKS.INNER_UPPER), list(LANDMARKS.INNER_LOWER)
    own = (lm2[inner_lo] - lm2[inner_up]) @ rig.v  # (11,) opening per pair
    descent = np.minimum(_upper_lip_descent(a[inner_up], b[inner_up], rig.iod), np.maximum(own, 0.0))
    rise = np.maximum(own, 0.0) - descent  # (11,) how far each lower-lip pair comes up
    known: dict[int, float] = {}
    for index in np.nonzero(b < b[2])[0]:  # above the nose base (subnasale): pinned
        known[int(index)] = 0.0
    lateral = np.abs(rel @ rig.u) / rig.iod
    for index in LANDMARKS.FACE_OVAL:
        known[index] = -float(rise[5]) * float(np.exp(-((lateral[index] / 0.85) ** 2))) if b[index] > 0 else 0.0
    # Lips stretched thin around a wide opening relax and thicken as they close: each lip's outer contour moves
    # less than its inner one, up to a relaxed vermilion height (about 0.12 IOD upper, 0.15 IOD lower).
    outer_up, outer_lo = list(LANDMARKS.OUTER_UPPER), list(LANDMARKS.OUTER_LOWER)
    thick_up = (lm2[inner_up] - lm2[outer_up]) @ rig.v  # (11,) px, >= 0 on a sane mesh
    thick_lo = (lm2[outer_lo] - lm2[inner_lo]) @ rig.v
    grow_up = np.clip(0.12 * rig.iod / max(float(thick_up[5]), 1.0), 1.0, 1.6)
    grow_lo = np.clip(0.15 * rig.iod / max(float(thick_lo[5]), 1.0), 1.0, 1.6)
    outer_descent = descent - (grow_up - 1.0) * np.maximum(thick_up, 0.0)
    outer_rise = rise - (grow_lo - 1.0) * np.maximum(thick_lo, 0.0)
    for contour, move in ((inner_up, descent), (outer_up, outer_descent), (inner_lo, -rise),
                          (outer_lo, -outer_rise)):  # fmt: skip
        for index, d in zip(contour, move, strict=True):
            known[int(index)] = float(d)
    idx = np.array(sorted(known))
    spline = RBFInterpolator(lm2[idx] / rig.iod, np.array([known[i] for i in idx]), kernel="thin_plate_spline")
    field = spline(lm2 / rig.iod)  # (478,) px along "down"
    field[idx] = [known[i] for i in idx]
    out = lm2 + field[:, None] * rig.v[None, :]
    # Mesh points inside the photo's opening (lip rings that mediapipe lays over the dark interior) go onto the
    # closed lip line: left between the lips they would draw shards of cavity along it.
    opening = np.concatenate([lm2[inner_up], lm2[inner_lo][::-1]]).astype(np.float32)
    lip_line = out[inner_up]
    order = np.argsort(lip_line @ rig.u)
    for index in range(N_MESH):
        if index in known or cv2.pointPolygonTest(opening, (float(lm2[index, 0]), float(lm2[index, 1])), False) <= 0:
            continue
        along = float(lm2[index] @ rig.u)
        line_b = np.interp(along, (lip_line @ rig.u)[order], (lip_line @ rig.v)[order])
        out[index] += (line_b - float(out[index] @ rig.v)) * rig.v
    return out


def _upper_lip_descent(a_up: np.ndarray, b_up: np.ndarray, iod: float) -> np.ndarray:
    """(11,) px each inner upper-lip point (lateral ``a_up``, depth ``b_up`` px, corners first and last) moves down.

    The lips of a closed, relaxed mouth meet near the line through the inner-lip corners, arched up by about
    0.02 IOD in the middle; an upper lip above that (raised in an 'O' or a yawn) comes down to it. A point
    already below it (corners pulled up in a smile) stays.
    """
    t = (a_up - a_up[0]) / (a_up[-1] - a_up[0]) if a_up[-1] != a_up[0] else np.full(len(a_up), 0.5)
    corner_line = b_up[0] + t * (b_up[-1] - b_up[0])
    arch = 0.02 * iod * (1.0 - (2.0 * t - 1.0) ** 2)
    return np.maximum(corner_line - arch - b_up, 0.0)


def _band(shape: tuple[int, ...], landmarks: np.ndarray, first: tuple[int, ...], second: tuple[int, ...],
          line: int = cv2.LINE_AA) -> np.ndarray:  # fmt: skip
    """(H, W) uint8 mask (0..255; antialiased unless ``line`` says otherwise) of the band between two contours
    that share their end points. Hard-edged masks (LINE_8, > 0) cover every pixel the band touches."""
    mask = np.zeros(shape, dtype=np.uint8)
    points = np.concatenate([landmarks[list(first)], landmarks[list(second)][::-1]])
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, lineType=line, shift=4)
    return mask
