"""Moving the rig's vertices: expression, blink, gaze and head pose applied to the 3D landmarks, then projected.

Pure numpy on small arrays (a few hundred vertices per frame); the pixels are drawn by
``generation.render.renderer``. This module sits below the rig (the rig triangulates a deformed pose when it is
set up), so it names what it reads from one as the ``Skeleton`` protocol instead of importing ``FaceRig``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from generation.face import LANDMARKS
from generation.motion import MotionState
from generation.render.config import RenderConfig

__all__ = ["N_MESH", "Skeleton", "deform_flat", "deform_landmarks", "inner_lip_gap"]

N_MESH = 478


class Skeleton(Protocol):
    """What deformation reads from a rig (``generation.render.rig.FaceRig`` provides it).

    Attributes:
        config: brow, lid, head-pivot and ring-follow settings. size: crop side (px).
        landmarks: (478, 3) base landmarks. u, v: (2,) the eye line and "down" in the face. iod: inter-ocular px.
        rest_gap: the base's inner-lip gap (IOD). mouth_half_width: px.
        jaw_weight, jaw_close_weight, width_weight, smile_weight: (478,) how much each landmark follows.
        ring, ring_parent: anchors around the head and the oval points they follow; border: fixed anchors.
        lash_parent, lash_offset: the lash-strip vertices' lid points and offsets.
    """

    config: RenderConfig
    size: int
    landmarks: np.ndarray
    u: np.ndarray
    v: np.ndarray
    iod: float
    rest_gap: float
    mouth_half_width: float
    jaw_weight: np.ndarray
    jaw_close_weight: np.ndarray
    width_weight: np.ndarray
    smile_weight: np.ndarray
    ring: np.ndarray
    ring_parent: np.ndarray
    border: np.ndarray
    lash_parent: np.ndarray
    lash_offset: np.ndarray


def deform_landmarks(rig: Skeleton, motion: MotionState) -> np.ndarray:
    """Apply expression, blink, gaze and head pose to the rig's landmarks.

    Returns:
        (B, V, 2) target positions: 478 landmarks, then the ring anchors, the lash-strip vertices, and the fixed
        border anchors.
    """
    cfg = rig.config
    bsz = len(motion)
    lm = np.broadcast_to(rig.landmarks, (bsz, N_MESH, 3)).copy()  # (B, 478, 3)
    u3 = np.array([rig.u[0], rig.u[1], 0.0])
    v3 = np.array([rig.v[0], rig.v[1], 0.0])
    col = lambda x: np.asarray(x, dtype=np.float64)[:, None, None]  # noqa: E731  (B,) -> (B, 1, 1)

    # Mouth: jaw drop to the target inner-lip gap, width, smile.
    drop = (col(motion.jaw_open) - rig.rest_gap) * rig.iod  # (B, 1, 1) pixels
    weight = np.where(drop > 0, rig.jaw_weight[None, :, None], rig.jaw_close_weight[None, :, None])
    lm += drop * weight * v3
    lm += col(motion.lip_width) * rig.mouth_half_width * rig.width_weight[None, :, None] * u3
    smile = col(motion.smile) * rig.iod
    lm += (
        smile
        * rig.smile_weight[None, :, None]
        * (0.05 * np.sign(rig.width_weight)[None, :, None] * u3 - 0.06 * v3)
    )

    # Brows.
    for idx, amount in ((LANDMARKS.RIGHT_BROW, motion.brow_r), (LANDMARKS.LEFT_BROW, motion.brow_l)):
        lm[:, list(idx)] -= col(amount) * cfg.brow_raise * rig.iod * v3

    # Gaze: shift the irises within the eye (before the blink compresses the eye).
    for iris, corners in (
        (LANDMARKS.RIGHT_IRIS, LANDMARKS.RIGHT_EYE_CORNERS),
        (LANDMARKS.LEFT_IRIS, LANDMARKS.LEFT_EYE_CORNERS),
    ):
        eye_width = float(np.linalg.norm(rig.landmarks[corners[0], :2] - rig.landmarks[corners[1], :2]))
        shift = col(motion.gaze_x) * 0.22 * eye_width * u3 + col(motion.gaze_y) * 0.12 * eye_width * v3
        lm[:, list(iris)] += shift

    # Blinks: the upper lid closes onto the lower lid; crease skin and iris follow in proportion, so the
    # vertical order inside the eye is kept (no fold).
    for pairs, crease, iris, amount in (
        (LANDMARKS.RIGHT_LID_PAIRS, LANDMARKS.RIGHT_LID_CREASE, LANDMARKS.RIGHT_IRIS, motion.blink_r),
        (LANDMARKS.LEFT_LID_PAIRS, LANDMARKS.LEFT_LID_CREASE, LANDMARKS.LEFT_IRIS, motion.blink_l),
    ):
        upper = [p[0] for p in pairs]
        lower = [p[1] for p in pairs]
        k = col(amount) * cfg.lid_close
        # Where each iris point sits between the lids, as a share t of the lid opening at its lateral position.
        t_iris, y_up0 = _between_lids(lm, upper, lower, list(iris), u3, v3)
        delta = lm[:, lower] - lm[:, upper]  # (B, 7, 3)
        lm[:, upper] += k * delta
        lm[:, list(crease)] += k * 0.4 * delta
        # The iris is squeezed with the opening (same t), so it never slides past a closing lid and shows
        # through it; t < 0 (iris under the upper lid's skin) scales the same way.
        _, y_up = _between_lids(lm, upper, lower, list(iris), u3, v3)
        y_lo = _lid_height(lm, lower, list(iris), u3, v3)
        target = y_up + t_iris * (y_lo - y_up)  # (B, 5)
        current = lm[:, list(iris)] @ v3
        lm[:, list(iris)] += (target - current)[..., None] * v3

    lash = lm[:, rig.lash_parent].copy()  # (B, 10, 3): rides on its (possibly closing) lid point
    lash[..., :2] += rig.lash_offset
    return _posed(rig, motion, np.concatenate([lm, lash], axis=1))


def deform_flat(rig: Skeleton, motion: MotionState, depth: float) -> np.ndarray:
    """The head pose of ``motion`` alone, applied to the rig's vertices as if they all lay in one plane at
    ``depth`` (landmark z units): the rigid motion of a flat thing held in front of the face (a hand over the
    mouth, a microphone), which turns with the head but is not shaped by it. The ring anchors follow it by
    ``ring_follow`` and the border stays, as in ``deform_landmarks``, so past the face it blends into the body.

    Returns:
        (B, V, 2) in ``deform_landmarks``' layout; at rest, the base vertices themselves.
    """
    lm = rig.landmarks.copy()
    lm[:, 2] = depth
    lash = lm[rig.lash_parent].copy()
    lash[:, :2] += rig.lash_offset
    points = np.broadcast_to(np.concatenate([lm, lash])[None], (len(motion), N_MESH + len(lash), 3))
    return _posed(rig, motion, points)


def _posed(rig: Skeleton, motion: MotionState, points: np.ndarray) -> np.ndarray:
    """Head pose: rotate ``points`` (B, 478 + 10, 3: landmarks and lash strip) in 3D about a pivot behind the
    face, project orthographically, scale and translate; then the ring anchors and the border. (B, V, 2)."""
    cfg = rig.config
    bsz = len(motion)
    center = rig.landmarks.mean(0)
    pivot = center + np.array([0.0, 0.0, cfg.head_pivot_depth * rig.iod])
    rot = _rotation(np.asarray(motion.yaw), np.asarray(motion.pitch), np.asarray(motion.roll))  # (B, 3, 3)
    moved = np.einsum("bij,bnj->bni", rot, points - pivot) + pivot
    scale = np.asarray(motion.scale, dtype=np.float64)[:, None, None]  # (B, 1, 1)
    xy_all = (moved[..., :2] - center[:2]) * scale + center[:2]
    xy_all += np.stack([np.asarray(motion.tx), np.asarray(motion.ty)], 1)[:, None, :] * rig.size
    xy, lash_xy = xy_all[:, :N_MESH], xy_all[:, N_MESH:]

    ring_motion = (xy[:, rig.ring_parent] - rig.landmarks[rig.ring_parent, :2]) * cfg.ring_follow
    ring = rig.ring[None] + ring_motion  # (B, R, 2)
    border = np.broadcast_to(rig.border, (bsz, len(rig.border), 2))
    return np.concatenate([xy, ring, lash_xy, border], axis=1)


def _lid_height(lm: np.ndarray, lid: list[int], points: list[int], u3: np.ndarray, v3: np.ndarray) -> np.ndarray:
    """(B, P): the lid line's "down" coordinate at each point's lateral position (linear between lid points)."""
    lid_a, lid_b = lm[:, lid] @ u3, lm[:, lid] @ v3  # (B, L)
    pa = lm[:, points] @ u3  # (B, P)
    out = np.empty(pa.shape)
    for i in range(len(lm)):
        order = np.argsort(lid_a[i])
        out[i] = np.interp(pa[i], lid_a[i][order], lid_b[i][order])
    return out


def _between_lids(lm: np.ndarray, upper: list[int], lower: list[int], points: list[int], u3: np.ndarray,
                  v3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(t, upper-lid height) for each point: t = 0 on the upper lid, 1 on the lower lid. Shapes (B, P)."""
    y_up = _lid_height(lm, upper, points, u3, v3)
    y_lo = _lid_height(lm, lower, points, u3, v3)
    y = lm[:, points] @ v3
    return (y - y_up) / np.maximum(y_lo - y_up, 1e-3), y_up


def _rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B, 3, 3) = Rz(roll) @ Ry(yaw) @ Rx(pitch) in image axes (x right, y down, z away from camera)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def inner_lip_gap(points: np.ndarray, iod: float) -> np.ndarray:
    """Mean distance between matching upper and lower inner-lip points (corners excluded), in IOD units.

    Args:
        points: (B, >=478, 2) landmark positions.
    Returns:
        (B,) inner-lip gap, the quantity the motion is calibrated on.
    """
    upper = points[:, list(LANDMARKS.INNER_UPPER[1:-1])]
    lower = points[:, list(LANDMARKS.INNER_LOWER[1:-1])]
    gaps = np.linalg.norm(lower - upper, axis=-1)  # (B, 9)
    # The middle three pairs carry the opening; the outer ones only shape it.
    return gaps[:, 3:6].mean(axis=1) / iod
