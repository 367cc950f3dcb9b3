"""Occlusion analysis: what in the photo covers the lower face or the eyes (a hand, a microphone, a cup, a hat).

The renderer warps the photo's pixels with the face mesh; wherever something lies in front of the face, the mesh
would drag it along with the jaw and draw the mouth interior over it. This stage finds such occluders once per
photo, from evidence that needs no weights beyond what mediapipe already bundles:

- hands: mediapipe's hand landmarker (bundled with the package); each found hand becomes a mask of thick bones
  and its palm. A hand over the mouth is skin-coloured, so no colour rule could separate it from the face.
- colour and texture: skin models learned from the photo's own cheeks and nose, a lip model from its own lips and
  a hair model from above the forehead. Near the mouth, smooth regions that are none of these (a cup, a glove, a
  coloured microphone) and reach in across the outline of the lower face are occluders. Hair (a beard, a
  moustache, a strand) is textured or hair-coloured and is left to the face, which it moves with.
- held objects (a microphone, a cup, a phone): the selfie segmentation leaves them out of the person. Where it
  says "not person" next to the lower face and chin, in pixels unlike the background around the head, something
  is held in front of the face, whatever its colour or texture (a black microphone grille on dark skin in a
  black-and-white photo has neither colour nor smoothness to go by).
- eye bands: the skin of the upper lid and under the eye should look like the cheek; where both are something
  else (a hat brim, sunglasses), the eye is covered and is not animated.

The result is a mask in crop pixels: the renderer draws the face layer from the photo with the occluder filled in
(``fill_occluded``), then pastes the photo's own occluder pixels back on top in every frame. The part on the face
(hands, colour-found objects: ``Occlusion.follows``) turns with the head; held objects stay where they are.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from generation.face import LANDMARKS, native_stderr_silenced, segment_person

__all__ = ["Occlusion", "find_occluders", "fill_occluded", "detect_hands"]

# Share of the mouth (outer-lip polygon) an occluder must cover before the lips are left unanimated: over half
# the mouth hidden, what shows of an opening is a sliver beside the hand, which reads as a drawing error.
MOUTH_HIDDEN_SHARE = 0.5
# Share of an eye's lid and under-eye bands that must be non-skin for the eye to count as covered.
EYE_COVERED_SHARE = 0.6
# Cheek points whose neighbourhood is sampled for the photo's skin colour (both cheeks, below the eyes).
_CHEEKS = (50, 280, 205, 425, 187, 411, 123, 352, 117, 346)
# The lower nose: lit differently from the cheeks (blush, make-up, painted shading), so a second skin model.
_NOSE = (195, 5, 4, 1)

_HANDS_LOCK = threading.Lock()
_HANDS: object | None = None
# Bones of mediapipe's 21-point hand, as chains from the wrist.
_FINGERS = ((0, 1, 2, 3, 4), (0, 5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (0, 17, 18, 19, 20))
_PALM = (0, 1, 5, 9, 13, 17)


@dataclass(frozen=True)
class Occlusion:
    """What covers the face in one crop.

    Attributes:
        mask: (H, W) bool occluder pixels (dilated a little past their edges so none of them is warped).
        alpha: (H, W) float32 weight of the photo's own pixels in every frame: 1 on ``mask``, feathered outside.
        mouth_covered: share of the mouth (outer-lip polygon) under the mask.
        eyes_covered: (right, left) whether each eye's surroundings are something other than skin.
        sources: which evidence found something ("hand", "colour", "object", "eyes").
        follows: (H, W) bool, the part of ``mask`` that is on the face and turns with the head: hands (a hand over
            the mouth, a chin resting on one) and things pressed to the face found by their colour (a glove, a
            scarf). The rest, objects the person segmentation leaves out of the person (a microphone on its
            stand), stays where the photo has it. None: nothing follows.
        follow_alpha, still_alpha: (H, W) float32 ``alpha`` split into the two parts (feathered each); None when
            nothing follows (``alpha`` is then all still).
    """

    mask: np.ndarray
    alpha: np.ndarray
    mouth_covered: float = 0.0
    eyes_covered: tuple[bool, bool] = (False, False)
    sources: tuple[str, ...] = field(default_factory=tuple)
    follows: np.ndarray | None = None
    follow_alpha: np.ndarray | None = None
    still_alpha: np.ndarray | None = None

    @classmethod
    def nothing(cls, shape: tuple[int, int]) -> Occlusion:
        """No occluder (occlusion analysis off, or a clear face)."""
        return cls(mask=np.zeros(shape, dtype=bool), alpha=np.zeros(shape, dtype=np.float32))

    @property
    def any(self) -> bool:
        return bool(self.mask.any())

    @property
    def mouth_hidden(self) -> bool:
        """Most of the mouth is covered: animate jaw, cheeks and head, not the lips."""
        return self.mouth_covered >= MOUTH_HIDDEN_SHARE

    @property
    def warnings(self) -> list[str]:
        """Plain-language notes for the job result: what was covered and what was therefore not animated."""
        out: list[str] = []
        if self.mouth_hidden:
            out.append(
                f"mouth mostly covered ({100 * self.mouth_covered:.0f} % hidden by {self._what()}): the lips are "
                "not animated, only jaw, cheeks and head move"
            )
        elif self.mouth_covered > 0.05:
            out.append(f"mouth partly covered ({100 * self.mouth_covered:.0f} %): the cover is kept on top")
        elif "object" in self.sources:
            out.append("an object in front of the mouth or chin (a microphone, a cup) is kept on top, unmoved")
        covered = [name for name, hidden in zip(("right", "left"), self.eyes_covered, strict=True) if hidden]
        if covered:
            out.append(f"{' and '.join(covered)} eye covered: no blinks or gaze shifts drawn there")
        return out

    def _what(self) -> str:
        return "a hand" if "hand" in self.sources else "an object"


def find_occluders(image: np.ndarray, landmarks: np.ndarray, iod: float, person: np.ndarray | None = None
                   ) -> Occlusion:  # fmt: skip
    """Find occluders of the lower face and the eyes in a face crop.

    Args:
        image: (H, W, 3) uint8 RGB crop. landmarks: (478, >=2) mesh points in crop pixels. iod: eye distance (px).
        person: (H, W) person probability of the crop (``segment_person``); computed here when not given.
    """
    shape = image.shape[:2]
    lm = landmarks[:, :2].astype(np.float64)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    cheeks = _colour_model(lab, _disks(shape, lm[list(_CHEEKS)], 0.07 * iod))
    nose = _colour_model(lab, _disks(shape, lm[list(_NOSE)], 0.05 * iod))
    if cheeks is not None and nose is not None and _far_from(nose.median[None, None], cheeks)[0, 0]:
        nose = None  # not skin after all (a brim or a hand over the nose): the cheeks alone say what skin is
    lip_band = _polygon(shape, _ring(lm, LANDMARKS.OUTER_UPPER, LANDMARKS.OUTER_LOWER))
    opening = _polygon(shape, _ring(lm, LANDMARKS.INNER_UPPER, LANDMARKS.INNER_LOWER))
    lip = _lip_model(lab, lip_band & ~opening, cheeks)
    # Hair above the forehead: beards, moustaches and strands over the cheek are hair-coloured and belong to the
    # face (they move with it); so does a hat.
    hair = _colour_model(lab, _disks(shape, lm[[10, 109, 338]] - np.array([0.0, 0.3 * iod]), 0.08 * iod))
    non_skin = _far_from(lab, cheeks) & _far_from(lab, nose)
    sources: list[str] = []

    hands = np.zeros(shape, dtype=bool)
    for points in detect_hands(image):
        hands |= _hand_mask(shape, points)
    if hands.any():
        sources.append("hand")
    foreign = non_skin & _far_from(lab, hair, lightness=False)
    if lip is not None:
        foreign &= _far_from(lab, lip)
    objects = _objects_near_mouth(lab, lm, iod, foreign, opening)
    if objects.any():
        sources.append("colour")
    if person is None:
        person = segment_person(image)
    held = _held_objects(lab, person, lm, iod, opening) & ~hands & ~objects
    if held.any():
        sources.append("object")
    mask = hands | objects | held
    grow = max(2, int(round(0.015 * iod)))
    if mask.any():
        mask = cv2.dilate(mask.astype(np.uint8), _disk(grow)).astype(bool)
    mouth_area = lip_band.sum()
    mouth_covered = float((mask & lip_band).sum() / mouth_area) if mouth_area else 0.0
    eyes = tuple(
        _eye_covered(shape, lm, iod, non_skin | hands, pairs, crease)
        for pairs, crease in ((LANDMARKS.RIGHT_LID_PAIRS, LANDMARKS.RIGHT_LID_CREASE),
                              (LANDMARKS.LEFT_LID_PAIRS, LANDMARKS.LEFT_LID_CREASE))
    )  # fmt: skip
    if any(eyes):
        sources.append("eyes")
    sigma = max(1.5, 0.01 * iod)
    # On the face (a hand, a glove): turns with the head. Held out from the person (a microphone): stays.
    follows = mask & cv2.dilate((hands | objects).astype(np.uint8), _disk(grow)).astype(bool) if mask.any() else None
    follow_alpha = still_alpha = None
    if follows is not None and follows.any():
        follow_alpha = _feathered(follows, sigma)
        still_alpha = _feathered(mask & ~follows, sigma)
    else:
        follows = None
    return Occlusion(
        mask=mask,
        alpha=_feathered(mask, sigma),
        mouth_covered=mouth_covered,
        eyes_covered=(bool(eyes[0]), bool(eyes[1])),
        sources=tuple(sources),
        follows=follows,
        follow_alpha=follow_alpha,
        still_alpha=still_alpha,
    )


def fill_occluded(image: np.ndarray, mask: np.ndarray, face: np.ndarray | None = None, margin: int = 8
                  ) -> np.ndarray:  # fmt: skip
    """The crop with the occluder painted out (inpainted from what lies around it): the face layer's texture.

    A head turn moves the face a few pixels against the occluder; warped from the photo as it is, the face would
    carry a second, moving copy of the occluder's edge out from under it. What the turn uncovers is drawn from
    this fill, so the fill keeps to the side of the face outline it is on: inside the outline it is drawn from the
    face only (behind a hand over the mouth lies more cheek and jaw), outside it from what is outside only (behind
    the fingers beside a cheek lies the wall, behind a wrist under the chin the neck or the collar).

    Args:
        face: (H, W) bool inside the face outline; None fills every occluder pixel from all its surroundings.
        margin: px of the other side, next to the occluder, kept out of each side's fill (TELEA reads about
            5 px around the hole).
    """
    if not mask.any():
        return image.copy()
    out = image.copy()
    hole = mask.astype(np.uint8)
    if face is None:
        out[mask] = cv2.inpaint(image, hole * 255, 5, cv2.INPAINT_TELEA)[mask]
        return out
    near = cv2.dilate(hole, _disk(margin)).astype(bool)
    for side in (face, ~face):
        part = mask & side
        if not part.any():
            continue
        # The other side next to the occluder is made part of the hole: none of its pixels feed this side.
        side_hole = (mask | (near & ~side)).astype(np.uint8)
        if side_hole.all() or not (side & ~mask).any():
            continue  # nothing on this side to draw from: leave the photo's pixels there
        ys, xs = np.nonzero(cv2.dilate(side_hole, _disk(margin)))
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1  # the fill only reads near the hole
        filled = cv2.inpaint(np.ascontiguousarray(image[y0:y1, x0:x1]), side_hole[y0:y1, x0:x1] * 255, 5,
                             cv2.INPAINT_TELEA)  # fmt: skip
        region = out[y0:y1, x0:x1]
        region[part[y0:y1, x0:x1]] = filled[part[y0:y1, x0:x1]]
    return out


def detect_hands(image: np.ndarray) -> list[np.ndarray]:
    """(21, 2) pixel landmarks of each hand mediapipe finds in an RGB image (at most two)."""
    global _HANDS
    height, width = image.shape[:2]
    with _HANDS_LOCK:
        if _HANDS is None:
            import mediapipe as mp

            with native_stderr_silenced():
                _HANDS = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2,
                                                  min_detection_confidence=0.5)  # fmt: skip
                result = _HANDS.process(np.ascontiguousarray(image))  # type: ignore[attr-defined]
        else:
            result = _HANDS.process(np.ascontiguousarray(image))  # type: ignore[attr-defined]
    hands = result.multi_hand_landmarks or []
    return [np.array([(p.x * width, p.y * height) for p in hand.landmark], dtype=np.float64) for hand in hands]


# ------------------------------------------------------------------------------------------------ evidence
def _hand_mask(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """(H, W) bool: a hand drawn from its landmarks as a filled palm and thick fingers.

    Fingers are about a quarter of the knuckle span wide; they are drawn a third wider and run past the tip
    landmark (which sits on the pad, not the nail's end) so no finger edge is left to the warp.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    span = float(np.linalg.norm(points[5] - points[17]))
    width = max(3, int(round(0.33 * span)))
    hull = cv2.convexHull(np.round(points[list(_PALM)]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    for chain in _FINGERS:
        pts = points[list(chain)]
        tip = pts[-1] + (pts[-1] - pts[-2]) / max(float(np.linalg.norm(pts[-1] - pts[-2])), 1e-6) * 0.5 * width
        line = np.round(np.vstack([pts, tip])).astype(np.int32)
        cv2.polylines(mask, [line], False, 1, width, cv2.LINE_8)
        cv2.circle(mask, tuple(int(v) for v in line[-1]), width // 2, 1, -1)
    return mask.astype(bool)


def _objects_near_mouth(lab: np.ndarray, lm: np.ndarray, iod: float, foreign: np.ndarray, opening: np.ndarray
                        ) -> np.ndarray:  # fmt: skip
    """(H, W) bool: smooth, foreign-coloured regions that reach into the lower face from outside it, near the mouth.

    Args:
        foreign: pixels unlike the photo's skin and lips. opening: the mouth opening (teeth, tongue, shadow are
            foreign too, and belong to the face).
    """
    shape = lab.shape[:2]
    face = _polygon(shape, lm[list(LANDMARKS.FACE_OVAL)])
    lower = face.copy()
    lower[: max(int(lm[2, 1]), 0)] = False  # below the nose base (subnasale)
    margin = max(2, int(round(0.1 * iod)))
    region = cv2.dilate(lower.astype(np.uint8), _disk(margin)).astype(bool)
    region[: max(int(lm[2, 1]), 0)] = False
    depth = cv2.distanceTransform(face.astype(np.uint8), cv2.DIST_L2, 5)  # px inside the face outline
    # Smooth: the local spread of lightness stays under that of hair (beards and moustaches are textured).
    light = lab[..., 0]
    mean = cv2.blur(light, (5, 5))
    spread = np.sqrt(np.maximum(cv2.blur(light * light, (5, 5)) - mean * mean, 0.0))
    candidate = foreign & region & ~opening & (spread < 12.0)
    candidate = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    mouth = _polygon(shape, _ring(lm, LANDMARKS.OUTER_UPPER, LANDMARKS.OUTER_LOWER))
    near_mouth = cv2.dilate(mouth.astype(np.uint8), _disk(max(2, int(0.35 * iod)))).astype(bool)
    keep = np.zeros(count, dtype=bool)
    min_area = (0.1 * iod) ** 2
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < min_area:
            continue
        part = labels == k
        inside = part & face
        # Across the face's outline: a real part outside it, and reaching well inside (not the background the
        # mesh outline takes in at the jaw), over or near the mouth.
        keep[k] = bool(
            (part & ~face).sum() >= 0.25 * min_area
            and inside.sum() >= min_area
            and depth[inside].max() >= 0.08 * iod
            and (inside & near_mouth).any()
        )
    found = keep[labels]
    if not found.any():
        return found
    # The whole object, not only its part near the mouth: fingertips over the nose, the arm below the chin (both
    # within the warp's reach). Everything below the eyes that is foreign, smooth and connected to what was found.
    below_eyes = np.zeros(shape, dtype=bool)
    below_eyes[max(int(lm[[33, 263], 1].max() + 0.1 * iod), 0) :] = True
    wide = foreign & ~opening & (spread < 12.0) & below_eyes
    wide = cv2.morphologyEx(wide.astype(np.uint8), cv2.MORPH_OPEN, _disk(1)).astype(bool) | found
    _, wide_labels = cv2.connectedComponents(wide.astype(np.uint8), connectivity=8)
    hit = np.unique(wide_labels[found])
    found = np.isin(wide_labels, hit[hit > 0])
    # Where the mesh put the mouth opening over the object, its pixels were left out above (an opening is foreign
    # by nature); those of the object's own colour, next to it, are the object.
    own = _colour_model(lab, found)
    if own is not None and (found & ~opening).any():
        similar = opening & ~_far_from(lab, own) & below_eyes
        _, near_labels = cv2.connectedComponents((found | similar).astype(np.uint8), connectivity=8)
        linked = np.unique(near_labels[found])
        found |= similar & np.isin(near_labels, linked[linked > 0])
    # The object's own edges and highlights (high spread) belong to it: close small gaps and fill small holes.
    closed = cv2.morphologyEx(found.astype(np.uint8), cv2.MORPH_CLOSE, _disk(max(2, int(0.03 * iod)))).astype(bool)
    return _fill_holes(closed, max_area=(0.15 * iod) ** 2) & below_eyes


def _held_objects(lab: np.ndarray, person: np.ndarray, lm: np.ndarray, iod: float, opening: np.ndarray
                  ) -> np.ndarray:  # fmt: skip
    """(H, W) bool: an object held in front of the mouth or chin (a microphone, a cup, a phone).

    The selfie segmentation counts the head, neck and shoulders as the person and leaves a held object out (or
    half out); the background beside the jaw is left out too, so "not person" alone is not enough. The object is
    what is not person *and* unlike the background around the lower face (a black microphone against a bright
    wall), in a region that runs from below the nose over the lower face and down past the chin (a microphone
    is held below the mouth, mostly outside the face outline, but within the warp's reach). A part must be large,
    touch the lower face and come near the mouth.

    Args:
        person: (H, W) person probability. opening: the mouth opening (dark, but the face's own).
    """
    shape = lab.shape[:2]
    face = _polygon(shape, lm[list(LANDMARKS.FACE_OVAL)])
    nose_base = max(int(lm[2, 1]), 0)
    lower = face.copy()
    lower[:nose_base] = False
    # From the lower face down past the chin (each pixel reached from up to 0.6 IOD above it), widened a little.
    reach = max(3, int(round(0.6 * iod)))
    down = cv2.dilate(lower.astype(np.uint8), np.ones((reach, 1), np.uint8), anchor=(0, reach - 1))
    region = cv2.dilate(down, _disk(max(2, int(round(0.15 * iod))))).astype(bool)
    region[:nose_base] = False
    absent = person < 0.8
    # The band the warp reaches around the region; its clearly-not-person pixels are the background.
    around = cv2.dilate(region.astype(np.uint8), _disk(max(3, int(round(0.5 * iod))))).astype(bool)
    background = _colour_model(lab, around & (person < 0.1))
    if background is None:
        return np.zeros(shape, dtype=bool)  # no background to tell an object from: nothing is claimed
    # Judged over the wider band (an object held out to the side is still one object), found in the region.
    unlike = (absent & around & ~opening & _far_from(lab, background)).astype(np.uint8)
    # A grille or a patterned cup is only partly unlike the background (its light wires are not): closing joins
    # the dark cells between them into one object before the parts are judged.
    unlike = cv2.morphologyEx(unlike, cv2.MORPH_CLOSE, _disk(max(1, int(round(0.04 * iod)))))
    unlike = cv2.morphologyEx(unlike & absent & around, cv2.MORPH_OPEN, _disk(1)).astype(bool)
    candidate = unlike & region
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate.astype(np.uint8), connectivity=8)
    touch = cv2.dilate(lower.astype(np.uint8), _disk(max(2, int(round(0.05 * iod))))).astype(bool)
    depth = cv2.distanceTransform(face.astype(np.uint8), cv2.DIST_L2, 5)  # px inside the face outline
    mouth = _polygon(shape, _ring(lm, LANDMARKS.OUTER_UPPER, LANDMARKS.OUTER_LOWER))
    near_mouth = cv2.dilate(mouth.astype(np.uint8), _disk(max(2, int(0.6 * iod)))).astype(bool)
    keep = np.zeros(count, dtype=bool)
    min_area = (0.15 * iod) ** 2
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < min_area:
            continue
        part = labels == k
        if not ((part & touch).sum() >= 0.1 * min_area and (part & near_mouth).any()):
            continue
        # Held, not background: the segmentation half counts a held object as the person all over it (it is
        # attached to them), while background beside the jaw is confidently background somewhere. Deep inside
        # the face outline nothing but an object in front can be "not person" at all.
        held = float(np.percentile(person[part], 10)) >= 0.1
        in_front = bool((part & face).any()) and float(depth[part & face].max()) >= 0.15 * iod
        keep[k] = held or in_front
    found = keep[labels]
    if not found.any():
        return found
    # The whole object, not only its part in the region: the rest of a microphone's head, held out to the side.
    _, wide_labels = cv2.connectedComponents(unlike.astype(np.uint8), connectivity=8)
    hit = np.unique(wide_labels[found])
    found |= np.isin(wide_labels, hit[hit > 0])
    # Where the object lies against the face the segmentation counts its edge as the person (the face is behind
    # it): the object's own colour, in a thin rim around what was found, is the object too.
    own = _colour_model(lab, found)
    if own is not None:
        rim = cv2.dilate(found.astype(np.uint8), _disk(max(2, int(round(0.05 * iod))))).astype(bool) & ~found
        found |= rim & ~_far_from(lab, own) & around & ~opening
    closed = cv2.morphologyEx(found.astype(np.uint8), cv2.MORPH_CLOSE, _disk(max(2, int(0.03 * iod)))).astype(bool)
    return _fill_holes(closed, max_area=(0.15 * iod) ** 2) & around


def _eye_covered(shape: tuple[int, int], lm: np.ndarray, iod: float, foreign: np.ndarray,
                 pairs: tuple[tuple[int, int], ...], crease: tuple[int, ...]) -> bool:  # fmt: skip
    """Whether the upper lid (between the lid margin and the crease) and the skin under the eye are both mostly
    not skin: a hat brim, sunglasses or a hand lies over the eye."""
    upper = lm[[p[0] for p in pairs]]
    lower = lm[[p[1] for p in pairs]]
    lid = _polygon(shape, np.vstack([upper, lm[list(crease)][::-1]]))
    down = np.array([0.0, 0.12 * iod])
    under = _polygon(shape, np.vstack([lower + np.array([0.0, 0.03 * iod]), (lower + down)[::-1]]))
    shares = [float((foreign & band).sum() / band.sum()) for band in (lid, under) if band.sum() >= 6]
    return len(shares) == 2 and min(shares) >= EYE_COVERED_SHARE


# ------------------------------------------------------------------------------------------------ colour
@dataclass(frozen=True)
class _Colour:
    median: np.ndarray  # (3,) L, a, b
    spread: np.ndarray  # (3,) robust standard deviation per channel


def _colour_model(lab: np.ndarray, where: np.ndarray) -> _Colour | None:
    """Median and robust spread (1.4826 MAD, floored) of the Lab pixels under ``where``; None if too few."""
    pixels = lab[where]
    if len(pixels) < 12:
        return None
    median = np.median(pixels, axis=0)
    spread = 1.4826 * np.median(np.abs(pixels - median), axis=0)
    # Floors: lighting varies over a face far more than the cheeks' own spread, chroma much less.
    return _Colour(median=median, spread=np.maximum(spread, np.array([10.0, 4.0, 4.0], dtype=np.float32)))


def _lip_model(lab: np.ndarray, band: np.ndarray, skin: _Colour | None) -> _Colour | None:
    """The photo's lip colour, learned from the pixels under the mesh's lip contours that can be lips: as red as
    the skin or redder, and near its yellow-blue balance. A hand, a glove or a microphone over part of the mouth
    is left out of the model; over most of it (under 30 % plausible) there is no lip colour to learn, and nothing
    is excused as lip."""
    if skin is None or band.sum() < 12:
        return None
    pixels = lab[band]
    plausible = (pixels[:, 1] >= skin.median[1] - 4.0) & (np.abs(pixels[:, 2] - skin.median[2]) <= 25.0)
    if plausible.mean() < 0.3:
        return None
    where = np.zeros(lab.shape[:2], dtype=bool)
    where[band] = plausible
    return _colour_model(lab, where)


def _far_from(lab: np.ndarray, model: _Colour | None, lightness: bool = True) -> np.ndarray:
    """(H, W) bool: pixels that cannot be this colour: chroma 5 spreads away, or (with ``lightness``) lightness
    far off (under 45 % or over 190 % of it: a black microphone on dark skin, a white cup), which shading alone
    rarely reaches on skin. Hair's lightness varies far more (strands in shadow): judged by chroma alone."""
    if model is None:
        return np.zeros(lab.shape[:2], dtype=bool)
    d = (lab - model.median) / model.spread
    chroma = np.sqrt(d[..., 1] ** 2 + d[..., 2] ** 2)
    light = lab[..., 0]
    base = max(float(model.median[0]), 1.0)
    if not lightness:
        return chroma > 5.0
    return (chroma > 5.0) | (light < 0.45 * base) | (light > min(1.9 * base, 250.0))


# ------------------------------------------------------------------------------------------------ shapes
def _ring(lm: np.ndarray, first: tuple[int, ...], second: tuple[int, ...]) -> np.ndarray:
    """A closed polygon along ``first`` and back along ``second`` (contours sharing their end points)."""
    return np.vstack([lm[list(first)], lm[list(second)][::-1]])


def _polygon(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _disks(shape: tuple[int, int], centres: np.ndarray, radius: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    for x, y in centres:
        cv2.circle(mask, (int(round(x)), int(round(y))), max(1, int(round(radius))), 1, -1)
    return mask.astype(bool)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` with the regions it encloses filled, up to ``max_area`` px each (a highlight on a microphone, not
    the face between two fingers)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    height, width = mask.shape
    out = mask.copy()
    for k in range(1, count):
        x, y, w, h, area = stats[k]
        touches_border = x == 0 or y == 0 or x + w == width or y + h == height
        if not touches_border and area <= max_area:
            out[labels == k] = True
    return out


def _feathered(mask: np.ndarray, sigma: float) -> np.ndarray:
    """1 on the mask, falling off outside it (never below 1 inside): at rest the photo is reproduced exactly."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.float32)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    return np.maximum(soft, mask.astype(np.float32))
