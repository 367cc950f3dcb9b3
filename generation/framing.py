"""Output framing: the square talking-head crop (``crop``), or the whole photo with the head animated (``full``).

Why composite instead of rendering the whole frame: everything outside the head region is still in a talking-head
video, so ``full`` renders only the head crop (exactly as ``crop`` does) and pastes it into the still picture. A
1080p frame then costs the crop render plus a paste of the region that changes, not a 1080p warp.

The seam: the crop's own border is pinned by the rig's fixed border anchors, so the rendered crop already equals
the photo there and motion fades out before it; the crop is framed wider than in ``crop`` mode (the face fills
``FULL_FACE_FRACTION`` of its side: head, hair and shoulders inside). A head at most ``size`` pixels across is cut
1:1 on whole pixels, so where it does not move the frame is the photo exactly; a larger one is rendered at ``size``
and enlarged at the paste, and the crop's outer band (``FEATHER_FRACTION`` of its side) is blended into the still
picture, which hides the resampling difference there.

Sizes: ``full`` keeps the photo's aspect ratio; the long side is at most 1920 and the short side at most 1080
(landscape fits 1920x1080, portrait 1080x1920), larger photos are scaled down, sides are made even (H.264 yuv420p)
by dropping the odd last row/column, and photos whose short side is under 256 pixels are enlarged to it (the
watermark needs 256x256 pixels). A 1280x853 photo gives 1280x852, a 4000x3000 photo 1440x1080.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import numpy as np

from generation.controls import InvalidControls
from generation.face import FaceAnalysis, FaceConfig, analyze_face, detect_landmarks

__all__ = [
    "FRAMINGS",
    "FULL_FACE_FRACTION",
    "Framing",
    "FramingMode",
    "FullFrameScene",
    "full_frame_size",
    "prepare_full_frame",
    "still_frame",
]

FramingMode = Literal["crop", "full"]
FRAMINGS: tuple[str, ...] = get_args(FramingMode)
MAX_LONG_SIDE = 1920
MAX_SHORT_SIDE = 1080
MIN_SHORT_SIDE = 256  # the watermark refuses frames under 256x256 pixels
CROP_SIZE_RANGE = (128, 1024)
DEFAULT_CROP_SIZE = 512
# Face extent over crop side in full framing: wider than the crop framing's 0.58, so the motion dies out inside the
# crop (head, hair, neck and shoulder line all lie inside) and the seam crosses only still parts of the picture.
FULL_FACE_FRACTION = 0.5
# Width of the blend band at the crop's edges, as a share of the crop side.
FEATHER_FRACTION = 0.06
# Side in pixels of the watermark's blocks (v3): the changed window is aligned to it, so marking the window alone
# gives the same pixels as marking the whole frame.
WINDOW_ALIGN = 16


@dataclass(frozen=True)
class Framing:
    """How the output is framed. Invalid values raise InvalidControls (code ``invalid_controls``) naming the field.

    mode: ``crop`` (a size x size head crop, the default) or ``full`` (the whole photo, up to 1920x1080).
    size: the head crop's side in pixels, even, 128..1024: the output side for ``crop``; for ``full``, the most the
        head region is rendered at (a smaller head is rendered at its own size, 1:1 with the frame).
    """

    mode: FramingMode = "crop"
    size: int = DEFAULT_CROP_SIZE

    def __post_init__(self) -> None:
        if self.mode not in FRAMINGS:
            raise InvalidControls("framing", f"{self.mode!r} is not one of {', '.join(FRAMINGS)}")
        check_crop_size(self.size)

    @classmethod
    def from_values(cls, mode: Any = None, size: Any = None, *, default_size: int = DEFAULT_CROP_SIZE) -> Framing:
        """From plain strings/numbers (form fields, JSON, CLI options); None or "" means the default."""
        if mode is None or (isinstance(mode, str) and not mode.strip()):
            mode = "crop"
        elif not isinstance(mode, str):
            raise InvalidControls("framing", f"expected a string, got {mode!r}")
        if size is None or (isinstance(size, str) and not size.strip()):
            size = default_size
        return cls(mode=mode.strip().lower(), size=_to_size(size))  # type: ignore[arg-type]

    def to_params(self) -> dict[str, Any]:
        """The JSON a job stores (and ``from_values(**params)`` reads back)."""
        return {"mode": self.mode, "size": self.size}


def _to_size(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise InvalidControls("size", f"expected an integer, got {raw!r}")
    try:
        return int(raw.strip()) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        raise InvalidControls("size", f"expected an integer, got {raw!r}") from None


def check_crop_size(size: int) -> int:
    """The crop side, validated: an even integer in 128..1024 (H.264 yuv420p needs even sides)."""
    lo, hi = CROP_SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidControls("size", f"expected an integer, got {size!r}")
    if not lo <= size <= hi or size % 2:
        raise InvalidControls("size", f"{size} must be an even number of pixels in {lo}..{hi}")
    return size


# ------------------------------------------------------------------------------------------------ frame size
def full_frame_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the full-frame output for a photo of ``width`` x ``height`` pixels.

    The aspect ratio is kept; the long side is at most MAX_LONG_SIDE and the short side at most MAX_SHORT_SIDE
    (whichever limits first), a short side under MIN_SHORT_SIDE is enlarged to it (unless that breaks the long
    limit), and both sides are rounded down to even.
    """
    if width < 2 or height < 2:
        raise ValueError(f"a photo of {width}x{height} pixels has no full frame")
    long_side, short_side = max(width, height), min(width, height)
    fit = min(1.0, MAX_LONG_SIDE / long_side, MAX_SHORT_SIDE / short_side)
    if short_side * fit < MIN_SHORT_SIDE:
        fit = min(MIN_SHORT_SIDE / short_side, MAX_LONG_SIDE / long_side)
    # The epsilon keeps an exact fit (4000 * 0.36 = 1440) from rounding down to 1439 through float noise.
    out_w = int(math.floor(width * fit + 1e-6)) // 2 * 2
    out_h = int(math.floor(height * fit + 1e-6)) // 2 * 2
    return out_w, out_h


def still_frame(photo_rgb: np.ndarray) -> np.ndarray:
    """The photo at its full-frame output size: cropped by the odd row/column when it fits as it is (pixels stay
    1:1), otherwise resampled (area averaging down, Lanczos up). (H, W, 3) uint8, H and W even."""
    height, width = photo_rgb.shape[:2]
    out_w, out_h = full_frame_size(width, height)
    if out_w <= width and out_h <= height and (width - out_w) <= 1 and (height - out_h) <= 1:
        return np.ascontiguousarray(photo_rgb[:out_h, :out_w])
    shrink = out_w < width
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
    return cv2.resize(photo_rgb, (out_w, out_h), interpolation=interpolation)


# ------------------------------------------------------------------------------------------------ the scene
class FullFrameScene:
    """The still full frame and where the rendered head crop goes in it.

    Args:
        still: (H, W, 3) uint8 output-size picture.
        crop_box: (left, top, side) of the square crop in ``still``'s pixels (floats, as the face analysis cut it;
            it may run past the picture's edges, where nothing is pasted).
        crop_size: side in pixels of the rendered crops.
        feather_fraction: blend band at the crop's edges, as a share of its side.

    ``window`` (y0, y1, x0, x1) is the only region of a frame that differs from ``still``: the crop's footprint
    grown to multiples of WINDOW_ALIGN (or the picture's edge).
    """

    def __init__(
        self,
        still: np.ndarray,
        crop_box: tuple[float, float, float],
        crop_size: int,
        *,
        feather_fraction: float = FEATHER_FRACTION,
    ) -> None:
        if still.ndim != 3 or still.shape[2] != 3 or still.dtype != np.uint8:
            raise ValueError("still must be (H, W, 3) uint8 RGB")
        self.still = np.ascontiguousarray(still)
        self.still.setflags(write=False)  # shared by every frame: a writer would change all of them
        self.crop_box = tuple(float(v) for v in crop_box)
        self.crop_size = int(crop_size)
        height, width = still.shape[:2]
        left, top, side = self.crop_box
        self.window = _aligned_window(left, top, side, height, width, WINDOW_ALIGN)
        y0, y1, x0, x1 = self.window
        # A crop larger than its place is first reduced by area averaging (the bilinear warp alone would alias), to
        # the nearest whole side; the warp then only enlarges or shifts.
        self._reduce_to = int(round(side)) if side < self.crop_size - 1 else None
        source_side = self._reduce_to or self.crop_size
        # Crop pixel (u, v) -> window pixel: pixel centres map to pixel centres.
        scale = side / source_side
        self._affine = np.array(
            [[scale, 0.0, left - x0 + 0.5 * scale - 0.5], [0.0, scale, top - y0 + 0.5 * scale - 0.5]],
            dtype=np.float64,
        )
        whole = (
            left.is_integer() and top.is_integer() and side == self.crop_size
            and left >= 0 and top >= 0 and left + side <= width and top + side <= height
        )  # fmt: skip
        self._offset = (int(top) - y0, int(left) - x0) if whole else None
        alpha = _feather_alpha(self.crop_box, self.window, (height, width), feather_fraction * side)
        # Where alpha is 1 the frame is the crop, where 0 the still picture; both regions are rectangles, so the
        # blend runs only on the four strips between them (a tenth of the window).
        self._solid = _bounds(alpha >= 1.0)
        self._strips = _band_strips(_bounds(alpha > 0.0), self._solid)
        self._strip_alpha = [alpha[ya:yb, xa:xb, None] for ya, yb, xa, xb in self._strips]
        self._still_window = self.still[y0:y1, x0:x1]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return self.still.shape[1], self.still.shape[0]

    def compose_window(self, crop: np.ndarray) -> np.ndarray:
        """The ``window`` region of the frame that shows ``crop``: (y1-y0, x1-x0, 3) uint8, a new array."""
        if crop.shape != (self.crop_size, self.crop_size, 3):
            raise ValueError(f"expected a ({self.crop_size}, {self.crop_size}, 3) crop, got {crop.shape}")
        y0, y1, x0, x1 = self.window
        if self._offset is not None:  # 1:1 on whole pixels: the crop itself, shifted (no resampling)
            oy, ox = self._offset
            placed = np.zeros_like(self._still_window)  # only read where alpha > 0, i.e. inside the crop
            placed[oy : oy + self.crop_size, ox : ox + self.crop_size] = crop
        else:
            if self._reduce_to is not None:
                crop = cv2.resize(crop, (self._reduce_to, self._reduce_to), interpolation=cv2.INTER_AREA)
            placed = cv2.warpAffine(
                crop, self._affine, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        out = self._still_window.copy()
        ya, yb, xa, xb = self._solid
        out[ya:yb, xa:xb] = placed[ya:yb, xa:xb]  # the inside: the rendered crop exactly
        for (ya, yb, xa, xb), alpha in zip(self._strips, self._strip_alpha, strict=True):
            still = self._still_window[ya:yb, xa:xb].astype(np.float32)
            mixed = still + alpha * (placed[ya:yb, xa:xb] - still)
            out[ya:yb, xa:xb] = np.rint(mixed).astype(np.uint8)
        return out

    def compose(self, crop: np.ndarray) -> np.ndarray:
        """The full output frame that shows ``crop``: (H, W, 3) uint8, a new array."""
        frame = self.still.copy()
        y0, y1, x0, x1 = self.window
        frame[y0:y1, x0:x1] = self.compose_window(crop)
        return frame


def _aligned_window(left: float, top: float, side: float, height: int, width: int, align: int
                    ) -> tuple[int, int, int, int]:  # fmt: skip
    """(y0, y1, x0, x1): the crop's footprint in the picture, grown outwards to multiples of ``align``, clipped."""
    x0 = max(0, int(math.floor(left)) // align * align)
    y0 = max(0, int(math.floor(top)) // align * align)
    x1 = min(width, -(-int(math.ceil(left + side)) // align) * align)
    y1 = min(height, -(-int(math.ceil(top + side)) // align) * align)
    if x1 <= x0 or y1 <= y0:
        raise ValueError("the head crop lies outside the picture")
    return y0, y1, x0, x1


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the bounding box of a 2-D mask's True cells (empty: all zero)."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return 0, 0, 0, 0
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _band_strips(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int]
                 ) -> list[tuple[int, int, int, int]]:  # fmt: skip
    """The rectangle ``outer`` minus the rectangle ``inner`` (inside it) as up to four non-empty strips."""
    oy0, oy1, ox0, ox1 = outer
    iy0, iy1, ix0, ix1 = inner
    if iy1 <= iy0 or ix1 <= ix0:
        return [outer] if oy1 > oy0 and ox1 > ox0 else []
    strips = [(oy0, iy0, ox0, ox1), (iy1, oy1, ox0, ox1), (iy0, iy1, ox0, ix0), (iy0, iy1, ix1, ox1)]
    return [s for s in strips if s[1] > s[0] and s[3] > s[2]]


def _feather_alpha(crop_box: tuple[float, float, float], window: tuple[int, int, int, int],
                   picture: tuple[int, int], feather: float) -> np.ndarray:  # fmt: skip
    """(h, w) float32 weight of the crop over ``window`` (y0, y1, x0, x1) of a ``picture`` (H, W): 1 inside, a
    smoothstep to 0 over ``feather`` pixels at the crop's edges, 0 outside it. An edge on or past the picture's
    border gets no band: there is no still picture beyond it to blend with."""
    left, top, side = crop_box
    y0, y1, x0, x1 = window
    height, width = picture
    feather = max(feather, 1.0)

    def ramp(coord: np.ndarray, lo: float, hi: float, extent: int) -> np.ndarray:
        inside = np.minimum(coord - lo if lo > 0 else np.inf, hi - coord if hi < extent else np.inf) / feather
        inside = np.where((coord < lo) | (coord > hi), -1.0, inside)  # outside the crop: none of it
        t = np.clip(inside, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    ay = ramp(np.arange(y0, y1, dtype=np.float64) + 0.5, top, top + side, height)
    ax = ramp(np.arange(x0, x1, dtype=np.float64) + 0.5, left, left + side, width)
    return np.minimum(ay[:, None], ax[None, :]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ analysis
def prepare_full_frame(photo_rgb: np.ndarray, max_crop_size: int) -> tuple[FaceAnalysis, FullFrameScene]:
    """Analyse the face on the full-frame picture and place its crop: (the crop's analysis, the scene).

    When the crop's side in the picture is between 128 and ``max_crop_size`` and it lies inside the picture, the
    crop is cut 1:1 on whole pixels: the head is rendered at the picture's own resolution and pasted without
    resampling, so where it does not move the frame is the photo exactly. A larger head is rendered at
    ``max_crop_size`` and enlarged at the paste; a smaller one at 128 and reduced. Raises NoFaceFound.
    """
    still = still_frame(photo_rgb)
    height, width = still.shape[:2]
    lo = CROP_SIZE_RANGE[0]
    face = analyze_face(still, FaceConfig(size=max_crop_size, face_fraction=FULL_FACE_FRACTION))
    left, top, side = face.crop_box
    native = int(round(side)) // 2 * 2
    x0, y0 = int(round(left)), int(round(top))
    if lo <= native <= max_crop_size and 0 <= x0 <= width - native and 0 <= y0 <= height - native:
        crop = np.ascontiguousarray(still[y0 : y0 + native, x0 : x0 + native])
        landmarks = detect_landmarks(crop)
        if landmarks is not None:  # else keep the resampled crop, whose mesh was found
            face = FaceAnalysis(image=crop, landmarks=landmarks, crop_box=(float(x0), float(y0), float(native)))
    elif native < lo < max_crop_size:
        # A small head: rendering it at max_crop_size would cost the full render for a few pixels of output.
        face = analyze_face(still, FaceConfig(size=lo, face_fraction=FULL_FACE_FRACTION))
    scene = FullFrameScene(still, face.crop_box, face.image.shape[0])
    return face, scene
