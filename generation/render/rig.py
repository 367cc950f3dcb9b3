"""The face rig: everything about one prepared photo that does not change per frame.

A rig holds the 478 mesh landmarks of the (possibly mouth-closed) base photo, the weights that say how much each
landmark follows the jaw, the lip corners and the smile, the fixed and half-following anchors around the face, the
depth-sorted triangle mesh, the colours measured from the photo (lips, lid skin, teeth) and the person mask that
keeps the background still. ``generation.render.deform`` moves its vertices by a MotionState and
``generation.render.renderer`` draws them. A rig is built by ``generation.render.build.build_rig``, which also
closes an open source mouth (``rebase`` onto the closed photo): the rig itself knows nothing of the stages that
draw from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.spatial import Delaunay

from generation.face import LANDMARKS, FaceAnalysis, segment_person
from generation.motion import MotionState
from generation.occlusion import Occlusion, fill_occluded, find_occluders
from generation.render.config import RenderConfig
from generation.render.deform import N_MESH, deform_landmarks
from generation.render.mouth_source import MouthSource

__all__ = ["FaceRig", "Paste", "background_plate"]

_EYES = (LANDMARKS.RIGHT_LID_PAIRS, LANDMARKS.LEFT_LID_PAIRS)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass(frozen=True)
class Paste:
    """Photo pixels laid over frames where the photo has them: (h, w, 3) ``rgb`` and (h, w, 1) ``alpha`` inside
    ``box`` (y0, y1, x0, x1), the box around the weight's non-zero pixels."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    box: tuple[int, int, int, int]

    @classmethod
    def of(cls, image: np.ndarray, alpha: np.ndarray | None, device: torch.device) -> Paste | None:
        """The paste of ``image`` (H, W, 3) uint8 weighted by ``alpha`` (H, W); None where the weight is all 0."""
        if alpha is None or not (alpha > 0).any():
            return None
        ys, xs = np.nonzero(alpha > 0)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        rgb = torch.from_numpy(image[y0:y1, x0:x1].astype(np.float32))
        weight = torch.from_numpy(alpha[y0:y1, x0:x1].astype(np.float32))[..., None]
        return cls(rgb=rgb.to(device).contiguous(), alpha=weight.to(device).contiguous(), box=(y0, y1, x0, x1))

    def onto(self, frames: torch.Tensor) -> None:
        """Blend into ``frames`` (B, H, W, 3) float, in place."""
        y0, y1, x0, x1 = self.box
        region = frames[:, y0:y1, x0:x1]
        region.add_((self.rgb - region).mul_(self.alpha))


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
        self.plate_hwc: torch.Tensor | None = None  # (H, W, 3) the photo's background, person inpainted away
        mask: np.ndarray | None = None  # the person probability, shared with the occlusion analysis
        if config.still_background:
            mask = segment_person(face.image)
            self.person = torch.from_numpy(mask).to(device=device, dtype=torch.float32)[None, None].contiguous()
            plate = background_plate(face.image, mask)  # a mouth-closed base has the same background
            self.plate_hwc = torch.from_numpy(plate).to(device=device, dtype=torch.float32).contiguous()
        shape = face.image.shape[:2]
        self.occlusion = (
            find_occluders(face.image, face.landmarks, face.inter_ocular, person=mask) if config.occlusion
            else Occlusion.nothing(shape)
        )  # fmt: skip
        # The photo's own occluder pixels over every frame: ``occluder_paste`` all of it, where the photo has it
        # (frames at the photo's own head pose); with a turned head ``still_paste`` the part that stays (a
        # microphone on its stand) and ``occluder_layer`` the part that turns with the head (a hand), the whole
        # photo with that part's weight as a fourth channel, (1, 4, H, W), for the renderer to warp.
        occlusion = self.occlusion
        self.occluder_paste = Paste.of(face.image, occlusion.alpha, device)
        self.still_paste = self.occluder_paste
        self.occluder_layer: torch.Tensor | None = None
        self.follow_box = (0, 0, 0, 0)  # (y0, y1, x0, x1) around the layer's non-zero weight
        if occlusion.follow_alpha is not None and config.occluder_follows_head:
            self.still_paste = Paste.of(face.image, occlusion.still_alpha, device)
            layer = np.concatenate([face.image.astype(np.float32), occlusion.follow_alpha[..., None]], -1)
            layer_t = torch.from_numpy(layer).to(device=device, dtype=torch.float32)
            self.occluder_layer = layer_t.permute(2, 0, 1).unsqueeze(0).contiguous()
            ys, xs = np.nonzero(occlusion.follow_alpha > 0)
            self.follow_box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        if self.occlusion.any:
            # The face layer is warped from the photo with the occluder painted out: a moving head would otherwise
            # carry a second copy of the occluder's edge out from under the still one.
            outline = face.landmarks[list(LANDMARKS.FACE_OVAL), :2]
            inside = np.zeros(shape, dtype=np.uint8)
            cv2.fillPoly(inside, [np.round(outline * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
            filled = fill_occluded(face.image, self.occlusion.mask, face=inside.astype(bool))
            face = FaceAnalysis(image=filled, landmarks=face.landmarks, crop_box=face.crop_box)
        self._setup(face)
        self.photo_gap = self.rest_gap  # the photo's own opening, kept when the base is closed

    @property
    def needs_closing(self) -> bool:
        """Whether the photo's mouth is open wider than ``config.open_mouth_gap`` and not under an occluder.

        A mouth under a hand is left as the mesh sees it: its lip points lie on the hand, and closing them would
        warp the hand's pixels.
        """
        return self.rest_gap > self.config.open_mouth_gap and not self.occlusion.mouth_hidden

    def rebase(self, closed: FaceAnalysis, mouth_source: MouthSource) -> None:
        """Animate from ``closed`` (the photo with its mouth closed) from now on, keeping the photo's own mouth
        interior as the texture of later openings. ``photo_gap`` still says how open the photo was."""
        self._setup(closed)
        self.mouth_source = mouth_source

    def _setup(self, face: FaceAnalysis) -> None:
        """Everything derived from one (photo, landmarks) pair: frame, weights, anchors, mesh, colours."""
        device = self.device
        self.base = face
        self.size = face.image.shape[0]
        lm = face.landmarks.astype(np.float64)  # (478, 3)
        lm[:, 2] = _smooth_rim_depth(lm, face.inter_ocular)
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
        self.occluder_depth = self._occluder_depth()
        self.lip_color = self._lip_color(face.image)
        self.lid_tone = _lid_tone(face.image, lm, v, self.iod)
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
        center = self.landmarks[list(LANDMARKS.FACE_OVAL), :2].mean(0)
        oval = self.landmarks[list(LANDMARKS.FACE_OVAL), :2]
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
        self.ring_parent = np.array(LANDMARKS.FACE_OVAL)[keep]
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

    def _occluder_depth(self) -> float:
        """The depth (landmark z) of the plane the occluder's following part moves in (``deform_flat``).

        A hand or a microphone in front of the face is a flat thing, not a surface: it turns as one piece with
        the face it touches. Its depth is the median of the mesh points under it and within 0.15 IOD of it,
        so along its edge it moves as the skin beside it does on average (the nose over the fingertips and the
        cheek beside the palm both stay where they were against it).
        """
        mask = self.occlusion.mask if self.occlusion.follows is None else self.occlusion.follows
        if not mask.any():
            return float(np.median(self.landmarks[:, 2]))
        grow = max(1, int(round(0.15 * self.iod)))
        near = cv2.dilate(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2))
        ij = np.clip(np.round(self.landmarks[:, :2]).astype(int), 0, self.size - 1)
        covered = near[ij[:, 1], ij[:, 0]].astype(bool)
        if covered.sum() < 3:  # beside the face (a microphone under the chin): the closest mesh points
            ys, xs = np.nonzero(mask)
            d = np.hypot(self.landmarks[:, 0, None] - xs[None], self.landmarks[:, 1, None] - ys[None]).min(1)
            covered = d <= np.sort(d)[11]
        return float(np.median(self.landmarks[covered, 2]))

    def _lip_color(self, image: np.ndarray) -> np.ndarray:
        pts = (
            self.landmarks[list(LANDMARKS.OUTER_LOWER[2:-2]), :2]
            + self.landmarks[list(LANDMARKS.INNER_LOWER[2:-2]), :2]
        ) / 2
        ij = np.clip(np.round(pts).astype(int), 0, self.size - 1)
        return image[ij[:, 1], ij[:, 0]].astype(np.float64).mean(0)

    @property
    def warnings(self) -> list[str]:
        """What the rig could not animate as usual, in plain words (occluded mouth or eyes)."""
        return self.occlusion.warnings

    # ------------------------------------------------------------------------------------------- per frame
    def rest_state(self, n_frames: int) -> MotionState:
        """The photo's own state (its mouth may be open): rendering it reproduces the photo."""
        state = MotionState.neutral(n_frames)
        state.jaw_open[:] = getattr(self, "photo_gap", self.rest_gap)
        return state

    def deform(self, motion: MotionState) -> np.ndarray:
        """Target vertex positions (mesh, ring, lash strip, border) for each frame: (B, V, 2) float64."""
        return deform_landmarks(self, motion)



def _lid_tone(image: np.ndarray, landmarks: np.ndarray, down: np.ndarray, iod: float) -> np.ndarray:
    """(3,) RGB of lit skin near the eyes: the median of the cheek just under both lower lids (the colour
    ``generation.render.eyes`` pulls a closing lid toward)."""
    lower = [p[1] for pairs in _EYES for p in pairs[1:-1]]
    points = landmarks[lower, :2] + 0.15 * iod * down
    ij = np.clip(np.round(points).astype(int), 0, image.shape[0] - 1)
    return np.median(image[ij[:, 1], ij[:, 0]].astype(np.float64), axis=0)


def _smooth_rim_depth(landmarks: np.ndarray, iod: float, width: float = 0.45, passes: int = 4) -> np.ndarray:
    """(478,) landmark depths with the rim of the face (within ``width`` IOD of its outline) smoothed.

    A head turn moves each point sideways by depth x sin(yaw). The mesh's depths along the face outline are
    noisy by a few percent of the face width, enough at 10-15 degrees for neighbouring rim points to move apart
    unevenly: the far edge becomes a sawtooth over the hair. Averaging depth with mesh neighbours near the rim
    (not on the nose, eyes or mouth, which hold the face's real relief) removes the teeth.
    """
    xy, z = landmarks[:, :2], landmarks[:, 2].copy()
    oval = xy[list(LANDMARKS.FACE_OVAL)].astype(np.float32)
    distance = np.array([abs(cv2.pointPolygonTest(oval, (float(x), float(y)), True)) for x, y in xy]) / iod
    rim = np.clip(1.0 - distance / width, 0.0, 1.0)  # 1 on the outline, 0 from ``width`` inside
    tri = Delaunay(xy).simplices
    neighbours: list[set[int]] = [set() for _ in range(len(xy))]
    for a, b, c in tri:
        neighbours[a].update((b, c))
        neighbours[b].update((a, c))
        neighbours[c].update((a, b))
    for _ in range(passes):
        mean = np.array([z[list(n)].mean() if n else z[i] for i, n in enumerate(neighbours)])
        z = z + rim * (mean - z)
    return z


def background_plate(image: np.ndarray, person: np.ndarray, work_side: int = 160) -> np.ndarray:
    """(H, W, 3) uint8: the photo with the person removed, their area inpainted from the background around it.

    Inpainting runs at ``work_side`` pixels (a large region at full size takes seconds) and is upscaled: what a
    move reveals is a thin strip of background, usually out of focus, so a soft fill reads as background. Outside
    the person (probability < 0.5, dilated) the plate is the photo itself.
    """
    size = image.shape[0]
    scale = work_side / size
    small = cv2.resize(image, (work_side, work_side), interpolation=cv2.INTER_AREA)
    hole = (cv2.resize(person, (work_side, work_side), interpolation=cv2.INTER_AREA) >= 0.3).astype(np.uint8)
    hole = cv2.dilate(hole, np.ones((3, 3), np.uint8), iterations=max(1, int(round(6 * scale))))
    if not hole.any() or hole.all():
        return image.copy()
    filled = cv2.inpaint(small, hole * 255, 3, cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (size, size), interpolation=cv2.INTER_CUBIC)
    mask = cv2.resize(hole.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.round(image * (1.0 - mask) + up * mask).clip(0, 255).astype(np.uint8)
