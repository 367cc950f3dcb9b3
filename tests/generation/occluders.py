"""Synthetic occluders drawn over a photo, for the occlusion tests (generation and service)."""

from __future__ import annotations

import cv2
import numpy as np

from generation.face import LANDMARKS, detect_landmarks

__all__ = ["GLOVE", "MIC_BODY", "with_glove", "with_microphone"]

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


MIC_BODY = (45, 45, 48)  # a dark grey grille; its wires are lighter
MIC_WIRE = (120, 120, 125)


def with_microphone(photo: np.ndarray, place: str = "chin") -> tuple[np.ndarray, np.ndarray]:
    """The photo with a textured microphone (a dark head with a wire grid, on a stem running to the bottom-right
    edge): ``place`` "chin" holds it below the mouth, over the chin and the jaw line on the image right, like a
    podium microphone; "aside" puts the same microphone in the background beside the jaw, clear of the face.

    Returns:
        (the photo with the microphone, (H, W) bool mask of the microphone's head in photo pixels; the stem below
        it runs over the neck or clothes, out of the face's reach)
    """
    lm = detect_landmarks(photo)
    assert lm is not None
    right_eye = lm[list(LANDMARKS.RIGHT_EYE_CORNERS), :2].mean(0)
    left_eye = lm[list(LANDMARKS.LEFT_EYE_CORNERS), :2].mean(0)
    iod = float(np.linalg.norm(left_eye - right_eye))
    corner = lm[291, :2]  # the mouth corner on the image right
    centre = corner + (np.array([0.35 * iod, 0.45 * iod]) if place == "chin" else np.array([1.6 * iod, 0.3 * iod]))
    axes = (int(0.3 * iod), int(0.2 * iod))
    shape = photo.shape[:2]
    head = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(head, (int(centre[0]), int(centre[1])), axes, -25, 0, 360, 1, -1)
    stem = np.zeros(shape, dtype=np.uint8)
    end = (int(min(centre[0] + 1.2 * iod, shape[1] - 1)), shape[0] - 1)
    cv2.line(stem, (int(centre[0]), int(centre[1])), end, 1, max(3, int(0.06 * iod)))
    image = photo.copy()
    image[(head | stem).astype(bool)] = MIC_BODY
    # The grille: a grid of light wires every ~4 % IOD over the head only.
    step = max(3, int(round(0.04 * iod)))
    grid = np.zeros(shape, dtype=bool)
    grid[::step, :] = True
    grid[:, ::step] = True
    image[grid & head.astype(bool)] = MIC_WIRE
    return image, head.astype(bool)
