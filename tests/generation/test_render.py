"""Renderer geometry and texture: no folds, an open source mouth closed once with its own teeth kept, blinks that
carry the lash strip, and a crop that mirrors (not streaks) beyond the photo."""

from __future__ import annotations

import cv2
import numpy as np

from generation.face import LANDMARKS, _crop_square
from generation.generator import PreparedFace
from generation.motion import MotionState
from generation.render import RenderConfig, Renderer, build_rig
from generation.render.deform import N_MESH, deform_flat, inner_lip_gap


def _signed_areas(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(K,) signed areas of the triangles over vertices (V, 2)."""
    p = verts[triangles]  # (K, 3, 2)
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def test_mouth_and_blink_never_fold_the_mesh(prepared: PreparedFace) -> None:
    rig = prepared.rig
    motion = MotionState.neutral(4)
    motion.jaw_open[:] = [0.0, 0.1, 0.24, 0.24]
    motion.blink_l[:] = [0.0, 0.5, 1.0, 0.0]
    motion.blink_r[:] = [0.0, 0.5, 1.0, 0.0]
    motion.smile[3] = 0.6
    # Orientation reference: the pose the mesh was triangulated in (mouth open, so no triangle bridges the lips).
    opened = MotionState.neutral(1)
    opened.jaw_open[:] = rig.rest_gap + 0.15
    reference = _signed_areas(rig.deform(opened)[0], rig.triangles)
    for frame in rig.deform(motion):
        area = _signed_areas(frame, rig.triangles)
        # Slivers under 2 px^2 inside a closed lid or lip slit are invisible (collapsed ones draw nothing).
        flipped = (np.sign(area) != np.sign(reference)) & (np.abs(area) > 2.0)
        assert not flipped.any(), f"{flipped.sum()} triangles fold over"


def test_open_source_mouth_is_closed_and_its_teeth_reused(prepared: PreparedFace) -> None:
    rig = prepared.rig
    photo_gap = inner_lip_gap(prepared.face.landmarks[None, :, :2].astype(np.float64), rig.iod)[0]
    assert photo_gap > rig.config.open_mouth_gap  # the example portrait smiles with her teeth showing
    assert rig.mouth_source is not None
    assert rig.rest_gap < 0.01  # the animation base has closed lips
    closed = MotionState.neutral(1)
    assert inner_lip_gap(rig.deform(closed), rig.iod)[0] < 0.02
    # While talking, the upper teeth hang from the (static) upper lip: right under it the frame shows the
    # photo's own teeth, pixel for pixel, where a painted band would not.
    motion = MotionState.neutral(1)
    motion.jaw_open[:] = 0.1
    lm = prepared.face.landmarks[:, :2]
    upper = lm[list(LANDMARKS.INNER_UPPER[3:-3])]  # the central inner upper-lip points
    x0, x1 = int(upper[:, 0].min()), int(upper[:, 0].max())
    y0 = int(upper[:, 1].max()) + 2
    y1 = y0 + int(0.05 * rig.iod)
    photo = prepared.face.image[y0:y1, x0:x1].astype(int)
    own = np.abs(Renderer(rig).render(motion)[0][y0:y1, x0:x1].astype(int) - photo).mean()
    painted_rig = build_rig(prepared.face, RenderConfig(open_mouth_gap=10.0), rig.device)  # never reuses the photo's
    painted = np.abs(Renderer(painted_rig).render(motion)[0][y0:y1, x0:x1].astype(int) - photo).mean()
    assert own < 12.0 and painted > own + 10.0, (own, painted)


def test_blink_carries_the_lash_strip_rigidly(prepared: PreparedFace) -> None:
    rig = prepared.rig
    motion = MotionState.neutral(2)
    motion.blink_l[:] = [0.0, 1.0]
    motion.blink_r[:] = [0.0, 1.0]
    verts = rig.deform(motion)  # (2, V, 2)
    start = len(verts[0]) - len(rig.border) - len(rig.lash_parent)
    lash = verts[:, start : start + len(rig.lash_parent)]  # (2, 14, 2)
    parents = verts[:, rig.lash_parent]
    # The strip keeps its offset from the lid while the lid travels most of the eye height.
    np.testing.assert_allclose(lash[1] - parents[1], lash[0] - parents[0], atol=1e-6)
    travel = np.linalg.norm(parents[1] - parents[0], axis=1)
    assert travel.max() > 0.1 * rig.iod


def test_crop_fills_beyond_the_photo_without_streaks() -> None:
    # A noisy photo cropped past its bottom edge: the fill must not repeat the last row's pixels down the frame
    # (vertical streaks: every column constant) nor mirror the photo (a second copy of what is above).
    rng = np.random.default_rng(0)
    image = (rng.random((100, 100, 3)) * 255).astype(np.uint8)
    crop = _crop_square(image, left=0.0, top=40.0, side=100.0, size=100).astype(int)  # rows 40..140
    beyond = crop[75:95, 10:90]  # photo rows ~115-135: outside
    column_contrast = np.abs(np.diff(beyond, axis=1)).mean()  # streaks keep the noise's column-to-column contrast
    assert column_contrast < 10
    mirrored = image[::-1][5:25, 10:90].astype(int)  # what a mirror would show there
    assert np.abs(beyond - mirrored).mean() > 30
    inside = crop[:50]  # photo rows 40-90: the photo itself
    assert np.abs(inside - image[40:90].astype(int)).mean() < 2


def test_background_stays_still_while_the_head_turns(prepared: PreparedFace) -> None:
    motion = MotionState.neutral(1)
    motion.yaw[:] = np.radians(8)
    motion.tx[:] = 0.03
    rig = prepared.rig
    assert rig.person is not None
    person = rig.person[0, 0].numpy()
    # Background near the head: the warp's ring moves it; the compositing must not.
    ys, xs = np.nonzero(person > 0.5)
    near = np.zeros_like(person, dtype=bool)
    near[max(ys.min() - 80, 0) : ys.max(), max(xs.min() - 80, 0) : min(xs.max() + 80, person.shape[1])] = True
    # ... but beyond the head's own reach (tx moves it 15 px): background in the photo and in the frame.
    away = cv2.distanceTransform((person < 0.5).astype(np.uint8), cv2.DIST_L2, 5) > 25
    background = near & away
    assert background.sum() > 500
    photo = rig.base.image.astype(int)
    still = Renderer(rig).render(motion)[0].astype(int)
    moving_rig = build_rig(prepared.face, RenderConfig(still_background=False), rig.device)
    moving = Renderer(moving_rig).render(motion)[0].astype(int)
    err_still = np.abs(still - photo)[background].mean()
    err_moving = np.abs(moving - photo)[background].mean()
    assert err_still < 1.0 and err_moving > 2.0 * err_still, (err_still, err_moving)


def test_wide_open_round_mouth_closes_flat_without_cavity_shards(shared_media, generator) -> None:
    """A yawning 'O' (its upper lip raised well above the corners): the upper lip comes down to the corner line,
    the lips meet, the chin follows, and no dark interior is left along the closed lips."""
    from generation import load_image

    photo = load_image((shared_media / "portraits" / "man_young_frontal_d19.jpg").read_bytes(), max_pixels=10**8)
    prepared = generator.prepare(photo)
    rig = prepared.rig
    assert rig.mouth_source is not None and rig.photo_gap > 0.3
    lm = rig.base.landmarks[:, :2].astype(np.float64)
    upper, lower = lm[list(LANDMARKS.INNER_UPPER)], lm[list(LANDMARKS.INNER_LOWER)]
    corners_mid = (upper[0] + upper[-1]) / 2
    assert abs(float((upper[5] - corners_mid) @ rig.v)) < 0.04 * rig.iod  # flat: no arch left from the 'O'
    np.testing.assert_allclose(upper, lower, atol=1e-3)
    # Lips thicker than the photo's stretched ones, and the closed mouth as bright as the lips around it.
    face = rig.base.image.astype(np.float64).mean(-1)
    band = face[int(upper[:, 1].min()) - 2 : int(upper[:, 1].max()) + 3, int(upper[2, 0]) : int(upper[-3, 0])]
    lips = face[int(lm[0, 1]) : int(lm[17, 1]), int(upper[2, 0]) : int(upper[-3, 0])]
    assert band.min() > 0.45 * np.median(lips)  # the cavity (about 0.25 of the lips' luma) is gone
    frames = Renderer(rig).render(MotionState.neutral(2))
    assert np.abs(frames[0].astype(int) - rig.base.image.astype(int)).mean() < 1.0


def test_closed_lids_are_shaded_toward_lit_skin(prepared: PreparedFace) -> None:
    """A blink's covered area moves toward the cheek tone; an open eye is left exactly as the warp drew it."""
    rig = prepared.rig
    renderer = Renderer(rig)
    motion = MotionState.neutral(2)
    motion.blink_l[1] = motion.blink_r[1] = 1.0
    shaded = renderer.render(motion).astype(float)
    warped = renderer.warp(rig.deform(motion)).astype(float)
    opened = rig.deform(MotionState.neutral(1))[0]
    upper = [p[0] for p in LANDMARKS.RIGHT_LID_PAIRS[2:-2]]
    x0, x1 = int(opened[upper, 0].min()), int(opened[upper, 0].max())
    y0 = int(opened[upper, 1].max()) + 1
    y1 = y0 + 3  # just under the open eye's upper lid: covered by the closed lid
    tone = np.asarray(rig.lid_tone)
    before = np.abs(warped[1, y0:y1, x0:x1] - tone).mean()
    after = np.abs(shaded[1, y0:y1, x0:x1] - tone).mean()
    assert after < 0.7 * before
    # Mouth interior aside, the open-eyed frame is the warp itself.
    eyes = slice(int(opened[:, 1].min()), int(opened[list(LANDMARKS.INNER_UPPER), 1].min()) - 5)
    np.testing.assert_array_equal(shaded[0, eyes], warped[0, eyes])


def test_turn_moves_the_face_rim_smoothly(prepared: PreparedFace) -> None:
    """Under a 14 degree turn, neighbouring landmarks never slide past each other by much more than their
    distance (mesh depth noise at the rim once drew a sawtooth over the hair at the far edge)."""
    from scipy.spatial import Delaunay

    rig = prepared.rig
    motion = MotionState.neutral(1)
    motion.yaw[:] = np.radians(14)
    dx = rig.deform(motion)[0, :478, 0] - rig.landmarks[:, 0]
    tri = Delaunay(rig.landmarks[:, :2]).simplices
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [0, 2]]])
    length = np.linalg.norm(rig.landmarks[edges[:, 0], :2] - rig.landmarks[edges[:, 1], :2], axis=1)
    strain = np.abs(dx[edges[:, 0]] - dx[edges[:, 1]]) / np.maximum(length, 1.0)
    assert strain.max() < 6.0  # unsmoothed rim depths: about 10 on this photo


def test_background_a_turn_reveals_comes_from_the_clean_plate(prepared: PreparedFace) -> None:
    """Where the person was in the photo but is not in the frame, the frame shows the inpainted background, not
    a second copy of the cheek or ear left behind by the warp."""
    rig = prepared.rig
    assert rig.plate_hwc is not None
    motion = MotionState.neutral(1)
    motion.yaw[:] = np.radians(-14)
    motion.tx[:] = -0.04
    frame = Renderer(rig).render(motion)[0].astype(float)
    saved = rig.plate_hwc
    rig.plate_hwc = rig.photo_background_hwc  # the old behaviour: the warp's own pixels stay there
    try:
        without = Renderer(rig).render(motion)[0].astype(float)
    finally:
        rig.plate_hwc = saved
    plate = saved.numpy()
    changed = np.abs(frame - without).mean(-1) > 8
    assert changed.sum() > 50  # the move reveals something
    assert np.abs(frame - plate)[changed].mean() < np.abs(without - plate)[changed].mean() / 3


def test_flat_pose_moves_the_face_as_one_plane(prepared: PreparedFace) -> None:
    """``deform_flat`` (what carries an occluder on the face): at rest the base vertices themselves; turned, every
    mesh vertex by one affine map (a flat hand is not shaped by the cheek's relief), while ``deform_landmarks``
    moves them by depth (the negative control: no one map fits it)."""
    rig = prepared.rig
    rest = MotionState.neutral(1)
    rest.jaw_open[:] = rig.rest_gap
    np.testing.assert_allclose(deform_flat(rig, rest, rig.occluder_depth)[0], rig.source_vertices, atol=1e-9)
    turned = MotionState.neutral(1)
    turned.yaw[:] = np.radians(20)
    turned.pitch[:] = np.radians(6)
    turned.jaw_open[:] = rig.rest_gap
    src = np.concatenate([rig.source_vertices[:N_MESH], np.ones((N_MESH, 1))], 1)

    def misfit(points: np.ndarray) -> float:
        affine = np.linalg.lstsq(src, points[:N_MESH], rcond=None)[0]
        return float(np.abs(src @ affine - points[:N_MESH]).max())

    flat = deform_flat(rig, turned, rig.occluder_depth)[0]
    assert misfit(flat) < 1e-6
    assert float(np.abs(flat[:N_MESH] - rig.source_vertices[:N_MESH]).max()) > 10.0  # it did turn
    assert misfit(rig.deform(turned)[0]) > 3.0  # a face is not flat


def test_rigid_source_map_matches_the_exact_one(prepared: PreparedFace) -> None:
    """The occluder layer's map, computed every 4 px and interpolated, is within a pixel of the per-pixel map."""
    rig = prepared.rig
    renderer = Renderer(rig)
    motion = MotionState.neutral(2)
    motion.yaw[:] = np.radians([20, -20])
    motion.tx[:] = [0.02, -0.01]
    targets = deform_flat(rig, motion, float(np.median(rig.landmarks[:, 2])))
    box = (rig.size // 3, rig.size, rig.size // 5, rig.size - rig.size // 5)  # the lower face down to the edge
    rigid = np.zeros(rig.n_vertices, dtype=bool)
    rigid[:N_MESH] = True
    lash = N_MESH + len(rig.ring)
    rigid[lash : lash + len(rig.lash_parent)] = True
    exact = renderer._warper.source_map(targets, box=box)
    coarse = renderer._warper.source_map_rigid(targets, rigid, box, step=4)
    error = (exact - coarse).norm(dim=-1)
    assert float(error.max()) < 1.5, float(error.max())
    assert float(error.mean()) < 0.05, float(error.mean())
