"""Landmark geometry shared by the cues: index sets, scale, alignment, eye and mouth openings, head rotation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CHEEK_LEFT",
    "CHEEK_RIGHT",
    "FOREHEAD",
    "eye_aspect",
    "head_rotation",
    "inter_ocular",
    "mouth_opening",
    "rotation_angles",
    "similarity_align",
    "similarity_fit",
]

# Skin patches for the pulse signal (no hair, no lids, no lips): forehead above the brows, both cheeks.
FOREHEAD = (107, 66, 69, 109, 10, 338, 299, 296, 336, 9)
CHEEK_RIGHT = (118, 119, 100, 126, 209, 49, 129, 203, 205, 50)  # subject's right, image left
CHEEK_LEFT = (347, 348, 329, 355, 429, 279, 358, 423, 425, 280)
# Rigid-ish points (eye corners, nose bridge and tip, under the nose): little expression motion.
STABLE = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 2)
# The inner face (eyes, brows, nose, mouth corners) and the outline, for two independent head-pose estimates.
INNER = (33, 133, 263, 362, 168, 6, 197, 195, 5, 4, 1, 2, 61, 291, 70, 300, 105, 334)
OUTLINE = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


def inter_ocular(lm: np.ndarray) -> np.ndarray:
    """Distance between the eye centres. lm: (..., 478, >=2). Returns (...)."""
    right = (lm[..., 33, :2] + lm[..., 133, :2]) / 2
    left = (lm[..., 263, :2] + lm[..., 362, :2]) / 2
    return np.linalg.norm(left - right, axis=-1)


def mouth_opening(lm: np.ndarray) -> np.ndarray:
    """Inner-lip gap (13 to 14, plus the two side pairs) over the inter-ocular distance. Returns (...)."""
    gap = (
        np.linalg.norm(lm[..., 13, :2] - lm[..., 14, :2], axis=-1)
        + np.linalg.norm(lm[..., 82, :2] - lm[..., 87, :2], axis=-1)
        + np.linalg.norm(lm[..., 312, :2] - lm[..., 317, :2], axis=-1)
    ) / 3
    return gap / np.maximum(inter_ocular(lm), 1e-6)


def eye_aspect(lm: np.ndarray) -> np.ndarray:
    """Mean eye aspect ratio of both eyes (lid gap over eye width). Returns (...)."""

    def one(top: tuple[int, int], bottom: tuple[int, int], corners: tuple[int, int]) -> np.ndarray:
        v = sum(np.linalg.norm(lm[..., t, :2] - lm[..., b, :2], axis=-1) for t, b in zip(top, bottom, strict=True))
        h = np.linalg.norm(lm[..., corners[0], :2] - lm[..., corners[1], :2], axis=-1)
        return v / (2 * np.maximum(h, 1e-6))

    return (one((159, 158), (145, 153), (33, 133)) + one((386, 385), (374, 380), (263, 362))) / 2


def similarity_fit(points: np.ndarray, reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The least-squares similarity transform (Umeyama) taking ``points`` (N, 2) onto ``reference`` (N, 2), as a
    function of any (M, 2) points (so other points can be carried along with the ones it was fitted on)."""
    mp, mr = points.mean(0), reference.mean(0)
    p, r = points - mp, reference - mr
    cov = r.T @ p / len(p)
    u, s, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, d]) @ vt
    scale = (s * np.array([1.0, d])).sum() / max((p**2).sum() / len(p), 1e-12)
    return lambda q: (scale * (rot @ (q - mp).T)).T + mr


def similarity_align(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 2) onto ``reference`` (N, 2) by the least-squares similarity transform (Umeyama)."""
    return similarity_fit(points, reference)(points)


def head_rotation(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) taking the centred, scale-normalised ``reference`` (N, 3) to ``points`` (N, 3) (Kabsch)."""
    p = points - points.mean(0)
    r = reference - reference.mean(0)
    p /= max(float(np.sqrt((p**2).sum(1).mean())), 1e-9)
    r /= max(float(np.sqrt((r**2).sum(1).mean())), 1e-9)
    u, _, vt = np.linalg.svd(r.T @ p)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def rotation_angles(rot: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a rotation matrix (y-x-z order, image axes)."""
    yaw = np.degrees(np.arcsin(np.clip(-rot[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(rot[2, 1], rot[2, 2]))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    return np.array([yaw, pitch, roll])
