"""Face analysis: mediapipe face mesh (478 landmarks incl. iris) and a talking-head crop around the face.

The mesh graph is slow to build, so one instance is cached per process and guarded by a lock (mediapipe graphs
are not re-entrant). The photo is analysed twice: once to find the face, once on the final crop, so landmark
coordinates are exact in the pixels the renderer warps.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from generation.errors import NoFaceFound

__all__ = ["FaceConfig", "FaceAnalysis", "analyze_face", "detect_landmarks", "segment_person", "LANDMARKS"]


class LANDMARKS:
    """Index sets of the mediapipe 478-point mesh used downstream (subject's right eye = image left)."""

    INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
    INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
    OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
    OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
    MOUTH_CORNERS = (61, 291)
    # Upper-lid point -> the lower-lid point it closes onto.
    RIGHT_LID_PAIRS = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155))
    LEFT_LID_PAIRS = ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))
    RIGHT_EYE_CORNERS = (33, 133)
    LEFT_EYE_CORNERS = (263, 362)
    # Skin between the lid margin and the crease; follows the lid part of the way during a blink.
    RIGHT_LID_CREASE = (247, 30, 29, 27, 28, 56, 190)
    LEFT_LID_CREASE = (467, 260, 259, 257, 258, 286, 414)
    RIGHT_IRIS = (468, 469, 470, 471, 472)
    LEFT_IRIS = (473, 474, 475, 476, 477)
    RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
    LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)
    # The face outline, clockwise from the top of the forehead.
    FACE_OVAL = (
        10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
        152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
    )  # fmt: skip


@dataclass(frozen=True)
class FaceConfig:
    """How the talking-head crop is framed.

    Args:
        size: output side in pixels.
        face_fraction: landmark extent (forehead to chin) as a fraction of the crop side.
        center_shift: move the crop centre down by this fraction of the side (room for neck and shoulders).
        min_detection_confidence: mediapipe face detector threshold.
    """

    size: int = 512
    face_fraction: float = 0.58
    center_shift: float = 0.04
    min_detection_confidence: float = 0.5


@dataclass(frozen=True)
class FaceAnalysis:
    """A face-centred crop of the photo and its mesh.

    Attributes:
        image: (size, size, 3) uint8 RGB crop.
        landmarks: (478, 3) float32 pixel coordinates in the crop; z is in the same pixel units as x
            (mediapipe's relative depth times the width), smaller = closer to the camera.
        crop_box: (left, top, side) of the crop in the original photo's pixels.
    """

    image: np.ndarray
    landmarks: np.ndarray
    crop_box: tuple[float, float, float]

    @property
    def eye_centers(self) -> np.ndarray:
        """(2, 2): subject's right then left eye centre (midpoint of the eye corners)."""
        lm = self.landmarks[:, :2]
        return np.stack(
            [lm[list(LANDMARKS.RIGHT_EYE_CORNERS)].mean(0), lm[list(LANDMARKS.LEFT_EYE_CORNERS)].mean(0)]
        )

    @property
    def inter_ocular(self) -> float:
        """Distance between the eye centres in crop pixels: the unit for every mouth/lid amplitude."""
        right, left = self.eye_centers
        return float(np.linalg.norm(left - right))


_MESH_LOCK = threading.Lock()
_MESH: object | None = None
_MESH_WARM = False


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: mediapipe's C++ (absl/TFLite) prints start-up chatter there before
    any logging is configured, which would bury the CLI's own messages. Used only while the graph warms up."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _mesh() -> object:
    global _MESH
    if _MESH is None:
        import mediapipe as mp

        _MESH = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
        )
    return _MESH


_SEGMENTER_LOCK = threading.Lock()
_SEGMENTER: object | None = None


def segment_person(image_rgb: np.ndarray) -> np.ndarray:
    """Person probability per pixel (head, hair, neck, shoulders = 1, background = 0) from mediapipe's selfie
    segmentation (offline, bundled with mediapipe). Returns (H, W) float32 in [0, 1]."""
    global _SEGMENTER
    with _SEGMENTER_LOCK:
        if _SEGMENTER is None:
            import mediapipe as mp

            with native_stderr_silenced():  # the graph's start-up chatter comes with its first frame
                _SEGMENTER = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
                result = _SEGMENTER.process(np.ascontiguousarray(image_rgb))  # type: ignore[attr-defined]
        else:
            result = _SEGMENTER.process(np.ascontiguousarray(image_rgb))  # type: ignore[attr-defined]
    return np.clip(np.asarray(result.segmentation_mask, dtype=np.float32), 0.0, 1.0)


def detect_landmarks(image_rgb: np.ndarray) -> np.ndarray | None:
    """Run the cached face mesh on one RGB image.

    Returns:
        (478, 3) float32 pixel landmarks (z scaled by the width), or None when no face is found.
    """
    global _MESH_WARM
    height, width = image_rgb.shape[:2]
    with _MESH_LOCK:
        if _MESH_WARM:
            result = _mesh().process(np.ascontiguousarray(image_rgb))  # type: ignore[attr-defined]
        else:
            with native_stderr_silenced():
                result = _mesh().process(np.ascontiguousarray(image_rgb))  # type: ignore[attr-defined]
            _MESH_WARM = True
    if not result.multi_face_landmarks:
        return None
    points = result.multi_face_landmarks[0].landmark
    lm = np.array([(p.x * width, p.y * height, p.z * width) for p in points], dtype=np.float32)  # (478, 3)
    return lm


def analyze_face(photo_rgb: np.ndarray, config: FaceConfig | None = None) -> FaceAnalysis:
    """Find the face, crop a square talking-head frame around it, and mesh the crop.

    Raises:
        NoFaceFound: no face in the photo, or the face is lost in the crop.
    """
    config = config or FaceConfig()
    if photo_rgb.ndim != 3 or photo_rgb.shape[2] != 3 or photo_rgb.dtype != np.uint8:
        raise ValueError("photo must be (H, W, 3) uint8 RGB")
    first = detect_landmarks(photo_rgb)
    if first is None:
        # Small faces in large photos: the detector works on a downscaled copy, so try a 2x upscale of nothing
        # else; a face that small would be unusable at 512 px anyway.
        raise NoFaceFound()
    x0, y0 = first[:, :2].min(0)
    x1, y1 = first[:, :2].max(0)
    left, top, side = _frame_box((float(x0), float(y0), float(x1), float(y1)), photo_rgb.shape[:2], config)
    crop = _crop_square(photo_rgb, left, top, side, config.size)
    lm = detect_landmarks(crop)
    if lm is None:
        raise NoFaceFound("a face was detected but lost after cropping - use a sharper, more frontal photo")
    return FaceAnalysis(image=crop, landmarks=lm, crop_box=(left, top, side))


def _frame_box(face: tuple[float, float, float, float], shape: tuple[int, ...], config: FaceConfig
               ) -> tuple[float, float, float]:  # fmt: skip
    """(left, top, side) of the square crop around a face box (x0, y0, x1, y1) in a photo of ``shape`` (H, W).

    The face is framed at ``face_fraction`` of the side and centred (a little high). Where that square runs off
    the photo, it is first tightened (the face may fill up to 75 % of it) and then slid back inside as far as
    the face keeps a 4 % margin: a filled-in border reads as a smeared band in every frame, so it is the last
    resort.
    """
    x0, y0, x1, y1 = face
    height, width = shape
    extent = max(x1 - x0, y1 - y0)
    side = extent / config.face_fraction
    side = max(min(side, float(min(height, width))), extent / 0.75)
    cx = (x0 + x1) / 2
    cy = (y0 + y1) / 2 + config.center_shift * side
    margin = 0.04 * side
    left = cx - side / 2
    left = float(np.clip(np.clip(left, 0.0, width - side), x1 + margin - side, x0 - margin))
    top = cy - side / 2
    top = float(np.clip(np.clip(top, 0.0, height - side), y1 + margin - side, y0 - margin))
    return left, top, float(side)


def _crop_square(image: np.ndarray, left: float, top: float, side: float, size: int) -> np.ndarray:
    """Crop [left, left+side) x [top, top+side) and resize to size x size (soft colour fill outside the photo)."""
    height, width = image.shape[:2]
    pad = int(np.ceil(max(0.0, -left, -top, left + side - width, top + side - height))) + 2
    padded = _pad_soft(image, pad) if pad > 2 else image
    offset = pad if pad > 2 else 0
    box = (left + offset, top + offset, left + offset + side, top + offset + side)
    pil = Image.fromarray(padded)
    resized = pil.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(resized, dtype=np.uint8).copy()


def _pad_soft(image: np.ndarray, pad: int) -> np.ndarray:
    """Pad by ``pad`` pixels with the edge colours, blurred: the frame continues the photo's colours softly.

    Repeating the edge pixel alone draws streaks (every column of a sweater repeats its own pixel), and mirroring
    puts a second chin under the first when the photo ends below the face.
    """
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    k = 2 * max(3, pad // 3) + 1
    blurred = cv2.blur(padded, (k, k))
    outside = np.ones(padded.shape[:2], dtype=bool)
    outside[pad:-pad, pad:-pad] = False
    padded[outside] = blurred[outside]
    return padded
