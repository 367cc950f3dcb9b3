"""Renderer: move the 478 landmarks by a MotionState, then draw the frame by an inverse piecewise-affine warp.

For every output pixel we find the triangle of the *target* mesh it lies in (a triangle-id raster), map it
back
through that triangle's affine transform to the photo, and sample with ``grid_sample``. Because the map goes
output -> source, every output pixel gets exactly one source pixel: lips never fold and there are no holes.
Inside the opened inner-lip contour a mouth interior is drawn (shaded cavity, upper-teeth band under the upper
lip, a hint of lower teeth) instead of stretching the lips. Fixed anchors on the image border keep the
background still; a ring of half-following anchors lets hair and neck follow the head a little.

All tensor maths runs on ``device`` (CPU or CUDA unchanged); only the triangle-id raster is drawn with OpenCV
on
the CPU (a few ms) and uploaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay

from generation.face import LANDMARKS, FaceAnalysis, segment_person
from generation.motion import MotionState

__all__ = ["RenderConfig", "FaceRig", "Renderer", "deform_landmarks", "inner_lip_gap"]

N_MESH = 478
_FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip


@dataclass(frozen=True)
class RenderConfig:
    """Args:
    ring_scale: anchor ring radius relative to the face oval (around the head, in hair/neck).
    ring_follow: share of the oval's motion the ring follows (0 = fixed, 1 = rigid with the face).
    border_anchors: anchors per image side (fixed: the background stays still).
    teeth_height: visible upper-teeth height (IOD units) when the mouth is open enough.
    lower_teeth_height: visible lower-teeth height (IOD units).
    feather_px: softness of the mouth-interior edge.
    lid_close: how far the upper lid travels to the lower lid at blink = 1.
    brow_raise: brow lift (IOD units) at brow = 1.
    lash_strip: height (IOD) of the strip above each upper-lid point that a blink carries down unstretched
        (the lashes); only the lid skin above it stretches to cover the eye.
    open_mouth_gap: a photo whose inner-lip gap (IOD) exceeds this is closed once at rig time, and its own
        mouth interior (teeth, tongue) is kept as the texture of every later opening.
    still_background: composite the warped person over the photo's own background (selfie segmentation), so
        only the person moves; what a move reveals is filled by the warp's stretched surroundings.
    own_teeth_max: the longest stretch (IOD) of the photo's interior shown hanging from the upper lip: about the
        upper incisors' exposure; below it a wider opening shows the cavity, not the photo's lower rows again.
    """

    ring_scale: float = 1.45
    ring_follow: float = 0.6
    border_anchors: int = 8
    teeth_height: float = 0.085
    lower_teeth_height: float = 0.035
    feather_px: float = 0.7
    lid_close: float = 0.97
    brow_raise: float = 0.07
    head_pivot_depth: float = 0.6
    lash_strip: float = 0.06
    open_mouth_gap: float = 0.06
    still_background: bool = True
    own_teeth_max: float = 0.11


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


class FaceRig:
    """Everything about one prepared face that does not change per frame: mesh, weights, colours.

    Args:
        face: the analysed crop. config: render settings. device: where tensors live.
    """

    def __init__(self, face: FaceAnalysis, config: RenderConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.mouth_source: MouthSource | None = None
        self.person: torch.Tensor | None = None  # (1, 1, H, W) person probability of the photo
        if config.still_background:
            mask = torch.from_numpy(segment_person(face.image)).to(device=device, dtype=torch.float32)
            self.person = mask[None, None].contiguous()
        self._setup(face)
        self.photo_gap = self.rest_gap
        if self.rest_gap > config.open_mouth_gap:
            # An open source mouth would stretch its tongue and palate into a tube on every frame: close it once
            # (lips meet, the chin comes up), animate from that closed base, and keep the photo's own interior
            # (its real teeth) as the texture drawn into later openings.
            source = MouthSource.from_face(face, device)
            self._setup(_closed_face(self, face))
            self.mouth_source = source

    def _setup(self, face: FaceAnalysis) -> None:
        """Everything derived from one (photo, landmarks) pair: frame, weights, anchors, mesh, colours."""
        device = self.device
        self.base = face
        self.size = face.image.shape[0]
        lm = face.landmarks.astype(np.float64)  # (478, 3)
        self.landmarks = lm
        self.iod = face.inter_ocular
        right_eye, left_eye = face.eye_centers
        u = (left_eye - right_eye) / max(np.linalg.norm(left_eye - right_eye), 1e-6)  # eye line, image left->right
        v = np.array([-u[1], u[0]])  # "down" in the face
        self.u, self.v = u, v
        self.mouth_center = (lm[13, :2] + lm[14, :2]) / 2
        self.mouth_half_width = float(np.linalg.norm(lm[308, :2] - lm[78, :2]) / 2) or self.iod * 0.4
        # The jaw law adds opening along "down", so the rest opening is measured along it too (a closed base
        # whose lips meet with a small sideways offset has a vertical gap of 0, not the Euclidean residue).
        middle = slice(4, 7)  # the three central inner-lip pairs, as in inner_lip_gap
        vertical = (lm[list(LANDMARKS.INNER_LOWER[middle]), :2] - lm[list(LANDMARKS.INNER_UPPER[middle]), :2]) @ v
        self.rest_gap = max(float(vertical.mean()) / self.iod, 0.0)
        self._init_weights()
        self._init_anchors()
        self._init_mesh()
        img = torch.from_numpy(face.image).to(device=device, dtype=torch.float32)
        self.image = img.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, H, W), 0..255
        if self.person is not None:
            # The box around the head anchors (ring) plus a margin: where a move shifts background visibly.
            pad = int(0.06 * self.size)
            lo = np.floor(self.ring.min(0)).astype(int) - pad
            hi = np.ceil(self.ring.max(0)).astype(int) + pad
            x0, y0 = np.clip(lo, 0, self.size)
            x1, y1 = np.clip(hi, 0, self.size)
            self.composite_box = (int(y0), int(y1), int(x0), int(x1))
            self.background = (1.0 - self.person[0, 0]).contiguous()  # (H, W)
            self.photo_background_hwc = self.image[0].permute(1, 2, 0).contiguous()  # (H, W, 3): stays still
        self.lip_color = self._lip_color(face.image)
        luminance = float(face.image[..., :3].mean())
        self.teeth_color = np.array([222.0, 214.0, 198.0]) * np.clip(luminance / 120.0, 0.65, 1.05)

    # ----------------------------------------------------------------------------------------------- set-up
    def _init_weights(self) -> None:
        lm2 = self.landmarks[:, :2]
        rel = lm2 - self.mouth_center
        a = rel @ self.u / self.mouth_half_width  # (478,) lateral, mouth half-widths
        b = rel @ self.v / self.iod  # (478,) below the mouth line, IOD
        lateral_iod = np.abs(rel @ self.u) / self.iod
        jaw = _smoothstep(b / 0.2) * np.exp(-((lateral_iod / 0.85) ** 2))
        # The lower lip moves as one body with the jaw. Its points are found by position (between the inner and
        # outer lower-lip contours), not by name: the mesh has two more lip rings between them, and a ring left
        # behind by the jaw folds the lip over itself (a torn lower lip on every opening).
        lower_lip = self._lower_lip_points(a, b)
        corners = np.array([61, 291, 78, 308])
        # Full weight over the middle of the lip, so the inner-lip gap equals jaw_open (the calibrated unit).
        jaw[lower_lip] = 1.0 - 0.3 * np.clip((np.abs(a[lower_lip]) - 0.6) / 0.4, 0.0, 1.0) ** 2
        jaw[corners] = 0.3
        jaw[(b < 0) & ~lower_lip] = 0.0
        jaw = self._spread_from_lip(jaw, lower_lip, b, corners)
        self.jaw_weight = jaw
        # Closing a photo's open mouth: every inner-lip pair must meet at once, so each lower-lip point moves
        # in proportion to the rest opening above it. The band below the lip that absorbs the closing must be
        # wider than the gap itself (smoothstep slope 1.5 / width), otherwise the chin overtakes the lip.
        close_width = max(0.2, 1.6 * self.rest_gap)
        close = _smoothstep(b / close_width) * np.exp(-((lateral_iod / 0.85) ** 2))
        close[b < 0] = 0.0
        rest = max(self.rest_gap * self.iod, 1e-6)
        inner_a = a[list(LANDMARKS.INNER_LOWER)]
        own = (lm2[list(LANDMARKS.INNER_LOWER)] - lm2[list(LANDMARKS.INNER_UPPER)]) @ self.v
        ratio = np.clip(own / rest, 0.0, 1.2)
        order = np.argsort(inner_a)
        close[lower_lip] = np.interp(a[lower_lip], inner_a[order], ratio[order])
        close[list(LANDMARKS.INNER_LOWER)] = ratio  # exact closure of every pair
        close[corners] = np.minimum(close[corners], 0.3)
        self.jaw_close_weight = self._spread_from_lip(close, lower_lip, b, corners)
        near_mouth = np.exp(-((b / 0.22) ** 2)) * np.exp(-(np.clip(np.abs(a) - 1.0, 0, None) ** 2) / 0.35**2)
        self.width_weight = a * near_mouth  # signed: corners move out, centre stays
        self.smile_weight = np.clip(np.abs(a), 0, 1.3) ** 2 * near_mouth

    def _spread_from_lip(self, weight: np.ndarray, lip: np.ndarray, b: np.ndarray, corners: np.ndarray
                         ) -> np.ndarray:  # fmt: skip
        """Let skin next to the lower lip (beside the corners, under the lip) follow it in part.

        A lip that moves while the cheek point beside it stays would slide over it: the triangle between them
        folds. Each point below the mouth line takes at least a Gaussian share (sigma 0.1 IOD) of its nearest
        lip points' weight.
        """
        lm2 = self.landmarks[:, :2]
        lip_idx = np.nonzero(lip)[0]
        d = np.linalg.norm(lm2[:, None, :] - lm2[None, lip_idx, :], axis=-1) / self.iod  # (478, L)
        share = (weight[lip_idx][None, :] * np.exp(-((d / 0.1) ** 2))).max(1)  # (478,)
        out = weight.copy()
        skin = ~lip & (b > 0.02)  # below the mouth line: the upper lip (on or above it) never follows the jaw
        skin[corners] = False
        skin[list(LANDMARKS.INNER_UPPER) + list(LANDMARKS.OUTER_UPPER)] = False
        out[skin] = np.maximum(out[skin], share[skin])
        return out

    def _lower_lip_points(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(478,) bool: mesh points on the lower lip, i.e. between its inner and outer contours.

        Args:
            a: lateral coordinate in inner-mouth half-widths. b: depth below the mouth line in IOD.
        """
        inner = list(LANDMARKS.INNER_LOWER)
        outer = list(LANDMARKS.OUTER_LOWER)
        o_in, o_out = np.argsort(a[inner]), np.argsort(a[outer])
        b_in = np.interp(a, a[inner][o_in], b[inner][o_in])
        b_out = np.interp(a, a[outer][o_out], b[outer][o_out])
        # Strictly below the inner contour: with closed lips the upper lip's inner ring lies on it too.
        mask = (np.abs(a) <= 1.0) & (b > b_in + 0.005) & (b <= b_out + 0.01)
        mask[list(LANDMARKS.INNER_UPPER) + list(LANDMARKS.OUTER_UPPER)] = False
        mask[inner + outer] = True
        return mask

    def _init_anchors(self) -> None:
        size = self.size
        center = self.landmarks[list(_FACE_OVAL), :2].mean(0)
        oval = self.landmarks[list(_FACE_OVAL), :2]
        ring = center + (oval - center) * self.config.ring_scale
        ticks = np.linspace(0, size, self.config.border_anchors + 1)
        border = np.unique(
            np.concatenate(
                [
                    np.stack([ticks, np.zeros_like(ticks)], 1),
                    np.stack([ticks, np.full_like(ticks, size)], 1),
                    np.stack([np.zeros_like(ticks), ticks], 1),
                    np.stack([np.full_like(ticks, size), ticks], 1),
                ]
            ),
            axis=0,
        )
        # Drop ring points that fall on or beyond the border (they would make slivers there).
        keep = np.all((ring > 4) & (ring < size - 4), axis=1)
        self.ring_parent = np.array(_FACE_OVAL)[keep]
        self.ring = ring[keep]
        self.border = border
        # Lash strip: a vertex above every upper-lid point, toward its crease point, moving rigidly with it.
        lm = self.landmarks[:, :2]
        # The lid points next to the eye corners are left out: a strip there would cross the corner's edges.
        parents = [p[0] for p in LANDMARKS.RIGHT_LID_PAIRS[1:-1] + LANDMARKS.LEFT_LID_PAIRS[1:-1]]
        creases = list(LANDMARKS.RIGHT_LID_CREASE[1:-1] + LANDMARKS.LEFT_LID_CREASE[1:-1])
        to_crease = lm[creases] - lm[parents]  # (10, 2)
        dist = np.linalg.norm(to_crease, axis=1, keepdims=True).clip(min=1e-6)
        height = np.minimum(self.config.lash_strip * self.iod, 0.45 * dist)
        self.lash_parent = np.array(parents)
        self.lash_offset = to_crease / dist * height  # (10, 2)
        self.n_vertices = N_MESH + len(self.ring) + len(self.lash_parent) + len(self.border)

    def _init_mesh(self) -> None:
        # Triangulate an opened-mouth, open-eyed pose so no triangle bridges the lips: the mouth opening
        # becomes triangles between inner-lip vertices only, which is where the interior is drawn.
        opened = MotionState.neutral(1)
        opened.jaw_open[:] = max(self.rest_gap, 0.0) + 0.15
        verts = self.deform(opened)[0]  # (V, 2)
        tri = Delaunay(verts).simplices.astype(np.int64)  # (K, 3)
        far = self.landmarks[:, 2].max() + 1.0
        depth = np.concatenate(
            [
                self.landmarks[:, 2],
                np.full(len(self.ring), far),
                self.landmarks[self.lash_parent, 2],
                np.full(len(self.border), far),
            ]
        )
        order = np.argsort(-depth[tri].mean(1))  # far to near: nearer triangles win overlaps
        self.triangles = tri[order]
        own = MotionState.neutral(1)
        own.jaw_open[:] = self.rest_gap
        self.source_vertices = self.deform(own)[0]  # (V, 2): the base image itself
        src = torch.as_tensor(self.source_vertices[self.triangles], dtype=torch.float32)  # (K, 3, 2)
        self._src_tri = src.to(self.device)

    def _lip_color(self, image: np.ndarray) -> np.ndarray:
        pts = (
            self.landmarks[list(LANDMARKS.OUTER_LOWER[2:-2]), :2]
            + self.landmarks[list(LANDMARKS.INNER_LOWER[2:-2]), :2]
        ) / 2
        ij = np.clip(np.round(pts).astype(int), 0, self.size - 1)
        return image[ij[:, 1], ij[:, 0]].astype(np.float64).mean(0)

    # ------------------------------------------------------------------------------------------- per frame
    def rest_state(self, n_frames: int) -> MotionState:
        """The photo's own state (its mouth may be open): rendering it reproduces the photo."""
        state = MotionState.neutral(n_frames)
        state.jaw_open[:] = getattr(self, "photo_gap", self.rest_gap)
        return state

    def deform(self, motion: MotionState) -> np.ndarray:
        """Target vertex positions (mesh, ring, lash strip, border) for each frame: (B, V, 2) float64."""
        return deform_landmarks(self, motion)


@dataclass(frozen=True)
class MouthSource:
    """The interior of a photo's open mouth (its real teeth, tongue, shadow), kept as a texture.

    Positions are in a mouth frame: ``axis`` along the inner-lip corners, ``down`` across; profiles are the inner
    upper and lower lip as tables over the lateral coordinate.

    Attributes:
        image: (1, 3, H, W) the original photo. center/axis/down: (2,) mouth frame in photo pixels.
        half: half the inner-lip width (px). lateral: (11,) table abscissae; upper/lower: (11,) lip offsets (px).
        split: share of the opening (from the upper lip) that belongs to the upper jaw: where the darkest row
            between upper and lower teeth is.
    """

    image: torch.Tensor
    center: np.ndarray
    axis: np.ndarray
    down: np.ndarray
    half: float
    lateral: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    split: float

    @classmethod
    def from_face(cls, face: FaceAnalysis, device: torch.device) -> MouthSource:
        lm = face.landmarks[:, :2].astype(np.float64)
        upper = lm[list(LANDMARKS.INNER_UPPER)]
        lower = lm[list(LANDMARKS.INNER_LOWER)]
        center, axis, down, half = _mouth_frame(upper)
        img = torch.from_numpy(face.image).to(device=device, dtype=torch.float32)
        lateral, up_b, lo_b = (upper - center) @ axis, (upper - center) @ down, (lower - center) @ down
        return cls(
            image=img.permute(2, 0, 1).unsqueeze(0).contiguous(),
            center=center,
            axis=axis,
            down=down,
            half=half,
            lateral=lateral,
            upper=up_b,
            lower=lo_b,
            split=_teeth_split(face.image, center, axis, down, half, lateral, up_b, lo_b),
        )


def _teeth_split(image: np.ndarray, center: np.ndarray, axis: np.ndarray, down: np.ndarray, half: float,
                 lateral: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> float:  # fmt: skip
    """Where the upper teeth end, as a share of the opening from the upper lip.

    The upper teeth are the bright run of rows that starts near the upper lip (sampled over the mouth's central
    half); the rows after it (the gap, the lower teeth, the tongue) belong to the lower jaw. Without a bright run
    (no teeth showing) the opening is shared half and half.
    """
    order = np.argsort(lateral)
    cols = np.linspace(-0.5, 0.5, 15) * half  # (C,)
    top = np.interp(cols, lateral[order], upper[order])
    bottom = np.interp(cols, lateral[order], lower[order])
    depth = np.linspace(0.0, 1.0, 21)  # (R,)
    pts = center + cols[None, :, None] * axis + (top + depth[:, None] * (bottom - top))[..., None] * down  # (R, C, 2)
    ij = np.clip(np.round(pts).astype(int), 0, image.shape[0] - 1)
    luma = image[ij[..., 1], ij[..., 0]].astype(np.float64).mean(-1).mean(1)  # (R,)
    bright = luma > (luma.max() + luma.min()) / 2
    if luma.max() - luma.min() < 25 or not bright[:9].any():  # flat interior, or no teeth under the upper lip
        return 0.5
    start = int(np.argmax(bright[:9]))
    end = start
    while end + 1 < len(bright) and bright[end + 1]:
        end += 1
    return float(np.clip(depth[end] + 0.5 / 20, 0.3, 0.95))


def _mouth_frame(upper: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre, axis, down, half width) of a mouth from its inner upper-lip points (corners first and last)."""
    left, right = upper[0], upper[-1]
    center = (left + right) / 2
    axis = (right - left) / max(float(np.linalg.norm(right - left)), 1e-6)
    down = np.array([-axis[1], axis[0]])
    return center, axis, down, max(float(np.linalg.norm(right - left)) / 2, 1.0)


def _closed_face(rig: FaceRig, face: FaceAnalysis) -> FaceAnalysis:
    """The photo with its mouth closed: the rig's closing warp at jaw_open = 0, drawn without an interior.

    Landmarks are the warped ones (depth unchanged), so no second mesh run is needed.
    """
    closed = MotionState.neutral(1)
    targets = rig.deform(closed)  # (1, V, 2)
    # Lips meet exactly, point on point: then every triangle between them is degenerate and draws nothing.
    targets[0, list(LANDMARKS.INNER_LOWER)] = targets[0, list(LANDMARKS.INNER_UPPER)]
    # Triangulate the closed pose itself: triangles of a mesh built on the open photo would fold when the lips
    # travel a whole mouth height; triangles between the meeting lips simply have no area here.
    triangles = Delaunay(targets[0]).simplices.astype(np.int64)  # (K, 3)
    image = Renderer(rig).warp(targets, triangles)[0]  # (H, W, 3) uint8
    landmarks = face.landmarks.copy()
    landmarks[:, :2] = targets[0, :N_MESH]
    return FaceAnalysis(image=image, landmarks=landmarks.astype(np.float32), crop_box=face.crop_box)


def deform_landmarks(rig: FaceRig, motion: MotionState) -> np.ndarray:
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

    # Head pose: rotate in 3D about a pivot behind the face, project orthographically, scale and translate.
    center = rig.landmarks.mean(0)
    pivot = center + np.array([0.0, 0.0, cfg.head_pivot_depth * rig.iod])
    rot = _rotation(np.asarray(motion.yaw), np.asarray(motion.pitch), np.asarray(motion.roll))  # (B, 3, 3)
    lash = lm[:, rig.lash_parent].copy()  # (B, 10, 3): rides on its (possibly closing) lid point
    lash[..., :2] += rig.lash_offset
    points = np.concatenate([lm, lash], axis=1)  # (B, 478 + 10, 3)
    moved = np.einsum("bij,bnj->bni", rot, points - pivot) + pivot
    xy_all = (moved[..., :2] - center[:2]) * col(motion.scale) + center[:2]
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


class Renderer:
    """Draws frames of one prepared face. Thread-compatible (no shared mutable state across calls)."""

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        size = rig.size
        ys, xs = torch.meshgrid(
            torch.arange(size, dtype=torch.float32, device=rig.device) + 0.5,
            torch.arange(size, dtype=torch.float32, device=rig.device) + 0.5,
            indexing="ij",
        )
        self._pixels = torch.stack([xs, ys], -1)  # (H, W, 2) pixel centres
        self._tri_cpu = rig.triangles.astype(np.int32)

    @torch.no_grad()
    def render(self, motion: MotionState) -> np.ndarray:
        """Render len(motion) frames. Returns (B, size, size, 3) uint8 RGB."""
        targets = self.rig.deform(motion)  # (B, V, 2)
        out = self._warp(targets)
        for b in range(len(targets)):
            self._draw_mouth(out[b], targets[b])
        return out.clamp_(0, 255).round_().to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def warp(self, targets: np.ndarray, triangles: np.ndarray | None = None) -> np.ndarray:
        """The mesh warp alone (no mouth interior) to target vertices (B, V, 2): (B, size, size, 3) uint8.

        Args:
            triangles: (K, 3) vertex indices drawn in order (later wins); default the rig's depth-sorted mesh.
        """
        return self._warp(targets, triangles).clamp_(0, 255).round_().to(torch.uint8).cpu().numpy()

    def _warp(self, targets: np.ndarray, triangles: np.ndarray | None = None) -> torch.Tensor:
        """(B, H, W, 3) float frames: every output pixel sampled from the base image through its triangle."""
        rig = self.rig
        if triangles is None:
            tri_cpu, tri, src_tri = self._tri_cpu, rig.triangles, rig._src_tri
        else:
            tri_cpu, tri = triangles.astype(np.int32), triangles
            src_tri = torch.as_tensor(rig.source_vertices[triangles], dtype=torch.float32, device=rig.device)
        ids = np.stack([self._raster(t, tri_cpu) for t in targets])  # (B, H, W) triangle ids
        affine = self._affines(targets, tri, src_tri)  # (B, K, 2, 3) target -> source
        ids_t = torch.from_numpy(ids).to(rig.device)
        bsz, k = affine.shape[:2]
        flat = affine.reshape(bsz * k, 6)
        offset = (torch.arange(bsz, device=rig.device) * k)[:, None, None]
        per_pixel = flat[(ids_t.long() + offset).reshape(-1)].reshape(bsz, rig.size, rig.size, 2, 3)
        px = self._pixels[None, ..., 0:1]  # (1, H, W, 1)
        py = self._pixels[None, ..., 1:2]
        src = per_pixel[..., 0] * px + per_pixel[..., 1] * py + per_pixel[..., 2]  # (B, H, W, 2)
        grid = src * (2.0 / rig.size) - 1.0  # align_corners=False convention
        if rig.person is None:
            image = rig.image.expand(bsz, -1, -1, -1)
            out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
            return out.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        # The person mask travels with the pixels as a fourth channel: where the warped frame shows background
        # and the photo shows background too, the photo's own (still) pixel is used.
        image = rig.image.expand(bsz, -1, -1, -1)
        out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.permute(0, 2, 3, 1).contiguous()  # (B, H, W, 3)
        # Only around the head does the warp move background noticeably: composite there, the rest is the warp.
        y0, y1, x0, x1 = rig.composite_box
        person = F.grid_sample(rig.person.expand(bsz, -1, -1, -1), grid[:, y0:y1, x0:x1], mode="bilinear",
                               padding_mode="border", align_corners=False)[:, 0]  # (B, h, w)  # fmt: skip
        keep = (1.0 - person).mul_(rig.background[y0:y1, x0:x1])  # background before and after
        region = out[:, y0:y1, x0:x1]
        region.add_(rig.photo_background_hwc[y0:y1, x0:x1].sub(region).mul_(keep[..., None]))
        return out

    def _raster(self, verts: np.ndarray, tri_cpu: np.ndarray) -> np.ndarray:
        """Triangle id per output pixel, drawn far-to-near (later ones win), 1/16 px precision.

        Collapsed triangles (closed lids and lips) are skipped: OpenCV would still draw them as a line of their
        source centroid's colour, a seam of teeth or eye along closed lips and lids. Their neighbours cover it.
        """
        ids = np.zeros((self.rig.size, self.rig.size), dtype=np.int32)
        tri = verts[tri_cpu]  # (K, 3, 2)
        d1, d2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        visible = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) > 0.1  # twice the area, px^2
        pts = np.round((tri - 0.5) * 16).astype(np.int32)  # (K, 3, 2) in 1/16 px
        for k in np.nonzero(visible)[0]:
            cv2.fillConvexPoly(ids, pts[k], int(k), lineType=cv2.LINE_8, shift=4)
        return ids

    def _affines(self, targets: np.ndarray, triangles: np.ndarray, src_tri: torch.Tensor) -> torch.Tensor:
        """(B, K, 2, 3) affine maps from each target triangle to its source triangle."""
        rig = self.rig
        tgt = torch.as_tensor(
            targets[:, triangles], dtype=torch.float32, device=rig.device
        )  # (B, K, 3, 2)
        ones = torch.ones(tgt.shape[:-1] + (1,), device=rig.device)
        m = torch.cat([tgt, ones], -1).transpose(-1, -2)  # (B, K, 3, 3) columns [x, y, 1]
        det = torch.linalg.det(m)
        ok = det.abs() > 1e-3
        m_safe = torch.where(ok[..., None, None], m, torch.eye(3, device=rig.device).expand_as(m))
        src = src_tri.transpose(-1, -2).expand(tgt.shape[0], -1, -1, -1)  # (B, K, 2, 3)
        affine = src @ torch.linalg.inv(m_safe)  # (B, K, 2, 3)
        # Degenerate (zero-area) triangles map everything to their source centroid.
        centroid = src_tri.mean(1)  # (K, 2)
        fallback = torch.zeros_like(affine)
        fallback[..., 2] = centroid
        return torch.where(ok[..., None, None], affine, fallback)

    def _draw_mouth(self, frame: torch.Tensor, verts: np.ndarray) -> None:
        """Paint the mouth interior inside the target inner-lip contour, in place. frame: (H, W, 3) float."""
        rig = self.rig
        cfg = rig.config
        upper = verts[list(LANDMARKS.INNER_UPPER)]
        lower = verts[list(LANDMARKS.INNER_LOWER)]
        gap_px = float(np.max(np.linalg.norm(lower - upper, axis=1)))
        if gap_px < 0.6:
            return
        center, axis, down, half = _mouth_frame(upper)
        ua = (upper - center) @ axis
        ub = (upper - center) @ down
        la = (lower - center) @ axis
        lb = (lower - center) @ down
        lo = np.floor(np.minimum(upper.min(0), lower.min(0)) - 2).astype(int).clip(0, rig.size - 1)
        hi = np.ceil(np.maximum(upper.max(0), lower.max(0)) + 2).astype(int).clip(1, rig.size)
        patch_px = self._pixels[lo[1] : hi[1], lo[0] : hi[0]]  # (h, w, 2)
        dev = rig.device
        rel = patch_px - torch.as_tensor(center, dtype=torch.float32, device=dev)
        a = rel @ torch.as_tensor(axis, dtype=torch.float32, device=dev)  # (h, w)
        b = rel @ torch.as_tensor(down, dtype=torch.float32, device=dev)
        b_up = _interp(a, ua, ub, dev)
        b_lo = _interp(a, la, lb, dev)
        f = cfg.feather_px
        inside = torch.sigmoid((b - b_up) / f) * torch.sigmoid((b_lo - b) / f)
        inside = inside * torch.sigmoid((half - a.abs()) / f)
        gap = (b_lo - b_up).clamp(min=1e-3)
        depth = ((torch.minimum(b - b_up, b_lo - b)).clamp(min=0) / (0.5 * gap)).clamp(max=1.0) ** 0.7
        lateral = (a / half).clamp(-1, 1)
        lip = torch.as_tensor(rig.lip_color, dtype=torch.float32, device=dev)
        near, deep = lip * 0.5, lip * 0.13
        shade = (depth * (1.0 - 0.35 * lateral**2))[..., None]
        color = near * (1 - shade) + deep * shade  # (h, w, 3)
        if rig.mouth_source is not None:
            color = self._own_interior(a, b, b_up, b_lo, half, color)
        else:
            # Upper teeth: a band hanging from the upper lip, shortest at the sides, shadowed at the top.
            arch = (1 - (lateral / 0.9) ** 2).clamp(min=0).sqrt()
            teeth_h = torch.minimum(torch.full_like(gap, cfg.teeth_height * rig.iod), 0.62 * gap) * arch
            t_up = torch.sigmoid((b_up + teeth_h - b) / 0.6) * (teeth_h > 0.5)
            teeth = torch.as_tensor(rig.teeth_color, dtype=torch.float32, device=dev)
            tshade = (0.72 + 0.28 * ((b - b_up) / teeth_h.clamp(min=1.0)).clamp(0, 1)) * (1 - 0.45 * lateral**2)
            color = color * (1 - t_up[..., None]) + teeth * tshade[..., None] * t_up[..., None]
            # Lower teeth: a thin, half-hidden band just above the lower lip.
            low_h = torch.minimum(torch.full_like(gap, cfg.lower_teeth_height * rig.iod), 0.3 * gap) * arch
            t_lo = torch.sigmoid((b - (b_lo - low_h)) / 0.6) * (low_h > 0.5) * 0.55
            color = color * (1 - t_lo[..., None]) + teeth * 0.8 * tshade[..., None] * t_lo[..., None]
        region = frame[lo[1] : hi[1], lo[0] : hi[0]]
        region.mul_(1 - inside[..., None]).add_(color * inside[..., None])

    def _own_interior(self, a: torch.Tensor, b: torch.Tensor, b_up: torch.Tensor, b_lo: torch.Tensor, half: float,
                      cavity: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The photo's own mouth interior, re-laid into the current opening: (h, w, 3) colours.

        The upper half of the photo's opening (upper teeth) hangs from the upper lip and the lower half (lower
        teeth, tongue) rides on the lower lip, each at the photo's scale; where the current opening is wider than
        the photo's, the gap between them is the shaded cavity. a/b: mouth-frame coordinates of the patch pixels;
        b_up/b_lo: the current inner-lip profiles there.
        """
        src = self.rig.mouth_source
        assert src is not None
        dev = a.device
        k = src.half / half  # photo pixels per output pixel
        src_iod = self.rig.iod  # the base and the photo share one crop: photo pixels
        s_lat = a * k  # lateral coordinate in the photo's mouth frame
        s_up = _interp(s_lat, src.lateral, src.upper, dev)
        s_lo = _interp(s_lat, src.lateral, src.lower, dev)
        s_gap = (s_lo - s_up).clamp(min=0.0)
        d_up = (b - b_up).clamp(min=0.0) * k  # depth below the upper lip, photo pixels
        d_lo = (b_lo - b).clamp(min=0.0) * k
        center = torch.as_tensor(src.center, dtype=torch.float32, device=dev)
        axis = torch.as_tensor(src.axis, dtype=torch.float32, device=dev)
        down = torch.as_tensor(src.down, dtype=torch.float32, device=dev)
        lateral = center + s_lat[..., None] * axis  # (h, w, 2)
        from_up = lateral + (s_up + d_up)[..., None] * down
        from_lo = lateral + (s_lo - d_lo)[..., None] * down
        size = src.image.shape[-1]
        grid = torch.stack([from_up, from_lo]) * (2.0 / size) - 1.0  # (2, h, w, 2)
        tex = F.grid_sample(src.image.expand(2, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                            align_corners=False).permute(0, 2, 3, 1)  # (2, h, w, 3)  # fmt: skip
        split = src.split
        # The jaw that is relatively nearer owns the pixel; each shows the photo's rows it had there.
        use_up = torch.sigmoid((d_lo / (1 - split) - d_up / split) / 0.8)[..., None]
        # The lower jaw's texture reaches half a pixel past its share, so the two meet without a dark seam;
        # the cavity shows only where neither reaches (an opening wider than the photo's).
        up_len = (split * s_gap).clamp(max=self.rig.config.own_teeth_max * src_iod)
        vis_up = torch.sigmoid((up_len - d_up) / 0.8)[..., None]
        vis_lo = torch.sigmoid(((1 - split) * s_gap + 0.5 - d_lo) / 0.8)[..., None]
        w_up = vis_up * (1 - vis_lo * (1 - use_up))
        w_lo = vis_lo * (1 - vis_up * use_up)
        w_cav = (1 - vis_up) * (1 - vis_lo)
        return (tex[0] * w_up + tex[1] * w_lo + cavity * w_cav) / (w_up + w_lo + w_cav).clamp(min=1e-6)


def _interp(x: torch.Tensor, xp: np.ndarray, fp: np.ndarray, device: torch.device) -> torch.Tensor:
    """np.interp for a tensor x over a small sorted table (xp, fp)."""
    order = np.argsort(xp)
    xs = torch.as_tensor(xp[order], dtype=torch.float32, device=device)
    ys = torch.as_tensor(fp[order], dtype=torch.float32, device=device)
    idx = torch.searchsorted(xs, x.contiguous()).clamp(1, len(xs) - 1)
    x0, x1 = xs[idx - 1], xs[idx]
    y0, y1 = ys[idx - 1], ys[idx]
    t = ((x - x0) / (x1 - x0).clamp(min=1e-6)).clamp(0, 1)
    return y0 + t * (y1 - y0)
