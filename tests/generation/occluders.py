"""Synthetic occluders drawn over a photo, for the occlusion tests (generation and service)."""

from __future__ import annotations

import cv2
import numpy as np

from generation.face import LANDMARKS, detect_landmarks

__all__ = ["GLOVE", "with_glove"]

GLOVE = (40, 70, 200)  # a flat blue: unlike any skin, lip or hair colour of the example photo


def with_glove(photo: np.ndarray, cover: str) -> np.ndarray:
    """The photo with a flat-coloured forearm rising from the bottom edge and a hand with four fingers over the
    mouth: ``cover`` "full" hides the whole mouth, "side" its subject's-left half (image right) only."""
    lm = detect_landmarks(photo)
    assert lm is not None
    right_eye = lm[list(LANDMARKS.RIGHT_EYE_CORNERS), :2].mean(0)
    left_eye = lm[list(LANDMARKS.LEFT_EYE_CORNERS), :2].mean(0)
    iod = float(np.linalg.norm(left_eye - right_eye))
    corners = lm[list(LANDMARKS.MOUTH_CORNERS), :2]
    mouth = corners.mean(0)
    if cover == "full":
        x0, x1 = mouth[0] - 0.45 * iod, mouth[0] + 0.5 * iod
    else:
        x0, x1 = mouth[0] + 0.05 * iod, mouth[0] + 0.7 * iod
    image = photo.copy()
    bottom = image.shape[0]
    arm = np.array([[x0, mouth[1]], [x1, mouth[1]], [x1 + 0.2 * iod, bottom], [x0 + 0.2 * iod, bottom]])
    cv2.fillPoly(image, [np.round(arm).astype(np.int32)], GLOVE)
    for k in range(4):
        cx = x0 + (k + 0.5) * (x1 - x0) / 4
        axes = (int(0.12 * iod * (x1 - x0) / (0.95 * iod)), int(0.25 * iod))
        cv2.ellipse(image, (int(cx), int(mouth[1] - 0.05 * iod)), axes, 0, 0, 360, GLOVE, -1)
    return image
