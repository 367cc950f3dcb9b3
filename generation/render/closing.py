"""Closing a photo's open mouth once, at rig time, so every frame animates from closed lips.

An open source mouth (a smile with teeth, an 'O', a yawn) would otherwise stretch its tongue and palate into a
tube on every frame. The lips are brought together by a spline-spread warp of the mesh, the opening is inpainted
out of the lips first so no cavity shows along the closed line, and the photo's own interior is kept elsewhere
(``generation.render.mouth_source.MouthSource``) as the texture of later openings.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import Delaunay

from generation.face import LANDMARKS, FaceAnalysis
from generation.render.deform import N_MESH
from generation.render.rig import FaceRig
from generation.render.warp import Warper

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
    source = _lips_over_opening(face, rebuild=rig.config.rebuild_closed_lips)
    image = Warper(rig).warp(targets, triangles, source=source)[0]  # (H, W, 3) uint8
    image = _relaxed_upper_lip(image, targets[0, :N_MESH])
    image = _lip_seam(image, targets[0, list(LANDMARKS.INNER_UPPER)], rig.lip_color, rig.iod)
    landmarks = face.landmarks.copy()
    landmarks[:, :2] = targets[0, :N_MESH]
    return FaceAnalysis(image=image, landmarks=landmarks.astype(np.float32), crop_box=face.crop_box)


def _lips_over_opening(face: FaceAnalysis, rebuild: bool = True) -> np.ndarray:
    """The photo with its mouth opening, and whatever of the interior lies inside the mesh's lip contours, replaced
    by the lips' own texture: the source for drawing the closed mouth.

    The mesh's inner-lip contours often sit on the teeth or the tongue (a laugh, a scream): the band it calls
    "lip" then starts with a strip of interior, which closing would squeeze between the lips as a line of teeth
    or tongue. Each lip's colour is learned from the part of it next to its outer contour (which the mesh places
    well); pixels of the lip band unlike it, or much darker (the shadow between interior and lip), that touch the
    opening are interior too. That whole region is refilled: its colour from a smooth inpainting of the lips
    around it, its fine detail mirrored column by column from the lip above (upper half) and below (lower half),
    so the closed lips carry the photo's own lip texture, not a smear.

    Args:
        rebuild: False gives the photo as it is (the naive closing: the warp alone brings the lips together).
    """
    if not rebuild:
        return face.image.copy()
    lm2 = face.landmarks[:, :2].astype(np.float64)
    shape = face.image.shape[:2]
    opening = _band(shape, lm2, LANDMARKS.INNER_UPPER, LANDMARKS.INNER_LOWER, line=cv2.LINE_8) > 0
    lips = (_band(shape, lm2, LANDMARKS.OUTER_UPPER, LANDMARKS.OUTER_LOWER, line=cv2.LINE_8) > 0) & ~opening
    lab = cv2.cvtColor(face.image, cv2.COLOR_RGB2LAB).astype(np.float32)
    interior = np.zeros(shape, dtype=bool)
    upper_model: tuple[np.ndarray, np.ndarray] | None = None
    contours = ((LANDMARKS.OUTER_UPPER, LANDMARKS.INNER_UPPER), (LANDMARKS.OUTER_LOWER, LANDMARKS.INNER_LOWER))
    for outer, inner in contours:
        lip = (_band(shape, lm2, outer, inner, line=cv2.LINE_8) > 0) & lips
        # The outer 40 % of the lip's thickness: lip for certain.
        middle = lm2[list(outer)] + 0.4 * (lm2[list(inner)] - lm2[list(outer)])
        rim = (_band_between(shape, lm2[list(outer)], middle) > 0) & lip
        if rim.sum() < 8:
            continue
        model = lab[rim]
        median = np.median(model, axis=0)
        spread = np.maximum(1.4826 * np.median(np.abs(model - median), axis=0), np.array([12.0, 4.0, 4.0]))
        d = (lab - median) / spread
        unlike = (np.hypot(d[..., 1], d[..., 2]) > 4.0) | (np.abs(d[..., 0]) > 4.0)
        if upper_model is None:
            upper_model = (median, spread)
        else:
            # A tongue the mesh took for the lower lip fills its whole band, rim included: the lower lip must then
            # be much redder than the upper one (a tongue is; a lower lip differs in lightness, not hue).
            up_median, up_spread = upper_model
            du = (lab - up_median) / up_spread
            unlike |= (np.hypot(du[..., 1], du[..., 2]) > 5.0) & (du[..., 1] > 3.0)
        interior |= lip & unlike
    # The mesh may put a lip contour on the tongue or the teeth: the shadow between them and the real lip edge
    # then lies inside the "lip". Dark pixels of the lip band are filled too.
    luma = face.image.astype(np.float32).mean(-1)
    dark = lips & (luma < 0.8 * float(np.median(luma[lips]))) if lips.any() else np.zeros_like(lips)
    # Only what touches the opening: the dark rim of the lips' outer edge is the lips' own shading.
    _, labels = cv2.connectedComponents((opening | dark | interior).astype(np.uint8), connectivity=8)
    inside = np.unique(labels[opening])
    fill = np.isin(labels, inside[inside > 0])
    mask = cv2.dilate(fill.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    return _mirror_lips(face.image, mask, lm2)


def _mirror_lips(image: np.ndarray, hole: np.ndarray, lm2: np.ndarray) -> np.ndarray:
    """``image`` with every vertical run of ``hole`` refilled: its upper half mirrors the pixels above it, its lower
    half those below, each within its lip's thickness (repeated when the lip is thinner than half the run)."""
    out = image.copy()
    trust = np.zeros(hole.shape, dtype=np.float32)  # how little the mirrored texture repeats itself, 0..1
    height = image.shape[0]
    top_x, top_y = lm2[list(LANDMARKS.OUTER_UPPER), 0], lm2[list(LANDMARKS.OUTER_UPPER), 1]
    bottom_x, bottom_y = lm2[list(LANDMARKS.OUTER_LOWER), 0], lm2[list(LANDMARKS.OUTER_LOWER), 1]
    order_t, order_b = np.argsort(top_x), np.argsort(bottom_x)
    for x in np.nonzero(hole.any(0))[0]:
        column = hole[:, x]
        edges = np.diff(np.concatenate([[0], column.astype(np.int8), [0]]))
        starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]  # runs [start, stop)
        lip_top = float(np.interp(x, top_x[order_t], top_y[order_t]))
        lip_bottom = float(np.interp(x, bottom_x[order_b], bottom_y[order_b]))
        for start, stop in zip(starts, stops, strict=True):
            if start == 0 or stop >= height:
                continue
            mid = (start + stop) // 2
            up = max(1, int(start - lip_top))  # the upper lip's thickness above the run
            down = max(1, int(lip_bottom - stop))
            ys = np.arange(start, mid)
            out[ys, x] = image[np.clip(start - 1 - (ys - start) % up, 0, height - 1), x]
            trust[ys, x] = min(1.0, up / max(mid - start, 1))
            ys = np.arange(mid, stop)
            out[ys, x] = image[np.clip(stop + (stop - 1 - ys) % down, 0, height - 1), x]
            trust[ys, x] = min(1.0, down / max(stop - mid, 1))
    # Columns mirrored independently repeat a thin lip's highlight into vertical streaks. The hole takes its
    # colour from a smooth inpainting of the lips around it, and only its fine detail (pores, lip lines) from
    # the mirrored texture, where the lip was thick enough to mirror without repeating itself much.
    base = cv2.inpaint(image, hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA).astype(np.float32)
    mirrored = out.astype(np.float32)
    detail = mirrored - cv2.GaussianBlur(mirrored, (0, 0), 2.0)
    weight = 0.6 * cv2.blur(trust, (5, 5))[..., None]
    rebuilt = np.clip(base + weight * detail, 0, 255)
    result = image.copy()
    result[hole] = np.round(rebuilt[hole]).astype(np.uint8)
    return result


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


def _band_between(shape: tuple[int, ...], first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(H, W) uint8 mask (0/255, hard-edged) of the band between two point chains of equal length."""
    mask = np.zeros(shape, dtype=np.uint8)
    points = np.concatenate([first, second[::-1]])
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, lineType=cv2.LINE_8, shift=4)
    return mask


def _band(shape: tuple[int, ...], landmarks: np.ndarray, first: tuple[int, ...], second: tuple[int, ...],
          line: int = cv2.LINE_AA) -> np.ndarray:  # fmt: skip
    """(H, W) uint8 mask (0..255; antialiased unless ``line`` says otherwise) of the band between two contours
    that share their end points. Hard-edged masks (LINE_8, > 0) cover every pixel the band touches."""
    mask = np.zeros(shape, dtype=np.uint8)
    points = np.concatenate([landmarks[list(first)], landmarks[list(second)][::-1]])
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 255, lineType=line, shift=4)
    return mask
