"""Invisible, keyed, error-corrected watermark on every frame (dwtDctSvd + BCH + HMAC), and its detector.

Why this shape: marking and detecting are separate objects (the marker only needs a minted payload; the detector
needs the key to tell a real mark from noise).

Payload (64 bits): a 32-bit generation tag stored with the generation, plus a 32-bit keyed check
`HMAC-SHA256(key, b"provatar-wm-v1" + tag)[:4]`: only the key holder can mint a valid payload.
Channel code: BCH(120, 64, t=8) (`safeguards._ecc`) -> 120 codeword bits, laid out as a 10 x 12-block tile repeated
over the whole frame (`safeguards._tile`), one bit per block by dwtDctSvd quantisation of the U channel
(`safeguards._dwtdctsvd`). v3 (`SCHEME_V3`, this version) uses 16x16-pixel blocks: a 512x512 frame holds 8.5
copies of every bit, and a half-size rendition still carries 8x8-pixel blocks that H.264 at CRF 28 keeps (v2's
8x8-pixel blocks became 4x4 there and were lost).

Detection: each block gives a soft vote in [-1, 1]; votes are summed per tile cell over blocks and frames, so a
frame the encoder smeared still adds its evidence. Platforms serve other sizes, crop and change brightness, so the
detector tries each scale of `DEFAULT_SCALES` (served / marked size: 1, 0.5, 0.75, 1.5; at those a marked block
covers a whole number of pixels, 16 * scale, and is read as served, with the QIM step scaled; other scales are
resampled to the nearest whole block); a frame whose side is a rendition of the size we write (512: 360p is 0.703)
also gets that scale tried. At each scale it searches the block grid's pixel offset and a chroma gain
(brightness x0.75..x1.25) on a few frames, scoring each by how coherent the cell sums are (a tile phase only
permutes cells, so the score ignores it); for the best offsets it tries all 120 tile phases through the BCH decoder
and the keyed check. A payload is only reported when a BCH codeword within 8 bit errors carries a tag whose HMAC
matches: for unmarked content each attempt succeeds with probability <= RANDOM_DECODE_BOUND * 2^-32 (about
2^-47.6), and a detection makes at most `MAX_ATTEMPTS` attempts ((4 + 2) scales x 2 offsets x 120 phases), so
`FALSE_POSITIVE_BOUND` (about 2^-37.1 = 6.7e-12) bounds the chance per clip.

Older outputs: a v2 mark (8x8-pixel blocks, same step on the block mean) is exactly a v3 mark at half size, so the
0.5 try reads it, at no extra cost; such a detection reports scale 0.5.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np

from safeguards import _dwtdctsvd, _ecc, _tile
from safeguards.errors import InvalidFrame, InvalidWatermarkPayload

__all__ = [
    "ALGORITHM_ID",
    "DEFAULT_SCALES",
    "DEFAULT_STRENGTH",
    "FALSE_POSITIVE_BOUND",
    "MAX_ATTEMPTS",
    "MIN_KEY_BYTES",
    "SCHEME_V2",
    "SCHEME_V3",
    "TAG_BITS",
    "WATERMARK_ALGORITHM",
    "WatermarkDetection",
    "WatermarkDetector",
    "WatermarkPayload",
    "WatermarkScheme",
    "Watermarker",
]


@dataclass(frozen=True)
class WatermarkScheme:
    """One version of the mark: its algorithm id (the C2PA soft-binding `alg`) and where it lives in the frame.

    block: side of the LL-band blocks that carry one bit each; a block covers (2 * block)^2 pixels.
    strength: default QIM step on a block's s0. s0 is about 2 * block * mean(U), so `strength / (2 * block)` is
        the step on the block's mean U, which sets the distortion: both schemes use 7 U levels (~40 dB PSNR).
    """

    algorithm: str
    block: int
    strength: float

    @property
    def pixels_per_block(self) -> int:
        return 2 * self.block


# v2 (8x8-pixel blocks): what provatar embedded until the scale-robust v3. Kept for reading older outputs; it is
# lost when the video is served at half size and re-encoded (the 4x4-pixel blocks that remain are below what
# H.264 keeps of chroma at CRF 28).
SCHEME_V2 = WatermarkScheme("org.provatar.watermark.dwtdctsvd-bch.v2", block=4, strength=56.0)
# v3 (16x16-pixel blocks): the same payload, code and tile, one octave lower, so a half-size rendition still holds
# 8x8-pixel blocks (4x4 chroma samples: one H.264 chroma transform block's DC). The detector searches the scale.
SCHEME_V3 = WatermarkScheme("org.provatar.watermark.dwtdctsvd-bch.v3", block=8, strength=112.0)

ALGORITHM_ID = SCHEME_V3.algorithm
WATERMARK_ALGORITHM = ALGORITHM_ID  # the name the pipeline and the C2PA manifest use
TAG_BITS = 32  # the generation tag's width (service.models.Generation.watermark_tag)
DEFAULT_STRENGTH = SCHEME_V3.strength
MIN_KEY_BYTES = 16
# The packaged transform refuses frames under 256x256 pixels; so does the embedder, for the same reason.
MIN_PIXELS = 256 * 256
MIN_SIDE = 64  # a strip narrower than this has too few rows of blocks to find the grid in
# The detector reads smaller frames (a 256-pixel rendition cropped), resampled to each candidate scale.
MIN_DETECT_PIXELS = 128 * 128

# Served size / marked size tried by the detector, most likely first: as marked, then the usual renditions.
DEFAULT_SCALES = (1.0, 0.5, 0.75, 1.5)
# Sides our generator writes: a frame whose side is a rendition of one of these (a 512-pixel output served at 360p:
# 0.703) gets that scale tried too, at most `MAX_SIZE_SCALES` of them. 512: the square crop (service setting
# output_size); 1080: the short side of full-frame outputs (1920x1080, 1440x1080, 1080x1920), whose 720p rendition
# (0.667) no default scale reads.
DEFAULT_NATIVE_SIZES = (512, 1080)
MAX_SIZE_SCALES = 2
_SIZE_SCALE_RANGE = (0.3, 2.0)

# Detector search space. Offsets: every pixel phase of the block grid. Gains: a coarse grid for the search,
# refined around the winner; brightness changes of +-25 % are covered.
_COARSE_GAINS = np.round(np.arange(0.76, 1.2401, 0.03), 4)  # 17 gains
_RANK_GAINS = np.array([0.82, 1.0, 1.18])
_FINE_STEPS = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])
SEARCH_FRAMES = 8  # frames (evenly spread) used to find offset and gain
CANDIDATES = 2  # best grid offsets tried through the decoder, per (scheme, scale)
# BCH + HMAC attempts: all tile phases at the best offsets, for each scale tried.
MAX_ATTEMPTS = (len(DEFAULT_SCALES) + MAX_SIZE_SCALES) * CANDIDATES * _tile.CELLS
FALSE_POSITIVE_BOUND = MAX_ATTEMPTS * _ecc.RANDOM_DECODE_BOUND * 2.0**-32


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise InvalidWatermarkPayload(
            f"the watermark key must be at least {MIN_KEY_BYTES} bytes; use the service's secret key material"
        )


@dataclass(frozen=True)
class WatermarkPayload:
    """The 64 payload bits: 32-bit generation tag + 32-bit keyed check, big-endian."""

    tag: int
    check: bytes

    VERSION: ClassVar[int] = 2
    N_BITS: ClassVar[int] = 64
    CODE_BITS: ClassVar[int] = _ecc.CODE_BITS
    ALGORITHM: ClassVar[str] = ALGORITHM_ID
    _DOMAIN: ClassVar[bytes] = b"provatar-wm-v1"  # the payload format is unchanged since v1; v2 adds the code

    def __post_init__(self) -> None:
        if not 0 <= self.tag < 2**TAG_BITS:
            raise InvalidWatermarkPayload(f"the watermark tag must be a {TAG_BITS}-bit unsigned int, got {self.tag}")
        if len(self.check) != 4:
            raise InvalidWatermarkPayload(f"the watermark check must be 4 bytes, got {len(self.check)}")

    @staticmethod
    def new_tag() -> int:
        """A fresh random tag for one generation (the service stores it to resolve detections)."""
        return secrets.randbits(TAG_BITS)

    @classmethod
    def keyed_check(cls, key: bytes, tag: int) -> bytes:
        """The 4-byte HMAC a valid payload must carry for `tag`."""
        _check_key(key)
        if not 0 <= tag < 2**TAG_BITS:
            raise InvalidWatermarkPayload(f"the watermark tag must be a {TAG_BITS}-bit unsigned int, got {tag}")
        return hmac.new(bytes(key), cls._DOMAIN + tag.to_bytes(4, "big"), hashlib.sha256).digest()[:4]

    @classmethod
    def for_generation(cls, key: bytes, tag: int) -> WatermarkPayload:
        """Mint the payload for one generation; only the key holder can do this."""
        return cls(tag=tag, check=cls.keyed_check(key, tag))

    def is_valid(self, key: bytes) -> bool:
        """True when the check is the keyed HMAC of the tag (constant-time comparison)."""
        return hmac.compare_digest(self.check, self.keyed_check(key, self.tag))

    def to_bytes(self) -> bytes:
        return self.tag.to_bytes(4, "big") + self.check

    @classmethod
    def from_bytes(cls, raw: bytes) -> WatermarkPayload:
        """Inverse of `to_bytes` (no key check: call `is_valid`)."""
        if len(raw) != cls.N_BITS // 8:
            raise InvalidWatermarkPayload(f"expected {cls.N_BITS // 8} payload bytes, got {len(raw)}")
        return cls(tag=int.from_bytes(raw[:4], "big"), check=bytes(raw[4:8]))

    def to_hex(self) -> str:
        """The payload as 16 hex digits, as recorded in the C2PA manifest and the audit log."""
        return self.to_bytes().hex()

    @classmethod
    def from_hex(cls, text: str) -> WatermarkPayload:
        """Inverse of `to_hex` (no key check: call `is_valid`)."""
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise InvalidWatermarkPayload(f"not a hex payload: {text!r}") from exc
        return cls.from_bytes(raw)

    def to_bits(self) -> np.ndarray:
        """The payload bit vector, (N_BITS,) uint8 of 0/1, most significant bit first."""
        return np.unpackbits(np.frombuffer(self.to_bytes(), dtype=np.uint8))

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> WatermarkPayload:
        """Inverse of `to_bits` (no key check: call `is_valid`)."""
        arr = np.asarray(bits)
        if arr.shape != (cls.N_BITS,):
            raise InvalidWatermarkPayload(f"expected {cls.N_BITS} bits, got shape {arr.shape}")
        return cls.from_bytes(np.packbits((arr != 0).astype(np.uint8)).tobytes())

    def codeword(self) -> np.ndarray:
        """The embedded BCH codeword, (CODE_BITS,) uint8: the payload bits then 56 parity bits."""
        return _ecc.Bch().encode(self.to_bytes())

    @classmethod
    def decode_soft(cls, soft: np.ndarray, key: bytes, *, bch: _ecc.Bch | None = None) -> WatermarkPayload | None:
        """Soft codeword votes, (CODE_BITS,) (positive = bit 1), -> the payload if it decodes and passes the key.

        One attempt: hard decision at 0, BCH correction of up to 8 bits, then the keyed check.
        """
        arr = np.asarray(soft, dtype=np.float64)
        if arr.shape != (cls.CODE_BITS,):
            raise InvalidWatermarkPayload(f"expected {cls.CODE_BITS} soft codeword bits, got shape {arr.shape}")
        decoded = (bch or _ecc.Bch()).decode((arr > 0).astype(np.uint8))
        if decoded is None:
            return None
        payload = cls.from_bytes(decoded[0])
        return payload if payload.is_valid(key) else None


def _frame_error(frame: np.ndarray, *, min_pixels: int, min_side: int) -> str | None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        return f"expected an (H, W, 3) uint8 RGB frame, got shape {shape} dtype {dtype}"
    return _size_error(frame.shape[0], frame.shape[1], min_pixels=min_pixels, min_side=min_side)


def _size_error(height: int, width: int, *, min_pixels: int, min_side: int) -> str | None:
    if height * width < min_pixels or min(height, width) < min_side:
        return (
            f"a {width}x{height} frame is too small to carry the watermark "
            f"(needs >= {min_pixels} pixels and sides >= {min_side})"
        )
    return None


def _validate_frame(frame: np.ndarray) -> None:
    error = _frame_error(frame, min_pixels=MIN_PIXELS, min_side=MIN_SIDE)
    if error:
        raise InvalidFrame(error)


def _check_strength(scheme: WatermarkScheme, strength: float) -> float:
    """The step on a block's mean U (strength / pixels per block) must lie in [1, 16] U levels."""
    step = strength / scheme.pixels_per_block
    if not 1.0 <= step <= 16.0:
        lo, hi = scheme.pixels_per_block, 16 * scheme.pixels_per_block
        raise InvalidWatermarkPayload(
            f"watermark strength must be in [{lo}, {hi}] for {scheme.algorithm}, got {strength}"
        )
    return float(strength)


class Watermarker:
    """Embeds one generation's payload into frames; stateless per frame, so frames are marked as they stream."""

    def __init__(
        self, payload: WatermarkPayload, *, strength: float | None = None, scheme: WatermarkScheme = SCHEME_V3
    ) -> None:
        self.payload = payload
        self.scheme = scheme
        self.strength = _check_strength(scheme, scheme.strength if strength is None else strength)
        self._tile = _tile.tile_bits(payload.codeword())  # (10, 12)
        self._grids: dict[tuple[int, int], np.ndarray] = {}  # block bits per frame size

    @property
    def algorithm(self) -> str:
        """The soft-binding algorithm id of the mark this embeds (for the C2PA manifest)."""
        return self.scheme.algorithm

    def embed(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Return a marked copy of an (H, W, 3) uint8 RGB frame (>= 256x256 pixels)."""
        _validate_frame(frame_rgb)
        block = self.scheme.block
        nby, nbx = _dwtdctsvd.grid_shape(frame_rgb.shape[0], frame_rgb.shape[1], block=block)
        grid = self._grids.get((nby, nbx))
        if grid is None:  # benign race under threads: both compute the same array
            grid = self._grids[(nby, nbx)] = _tile.grid_bits(self._tile, nby, nbx)
        return _dwtdctsvd.embed_block_bits(frame_rgb, grid, scale=self.strength, block=block)

    def embed_window(self, window_rgb: np.ndarray, origin: tuple[int, int], frame_shape: tuple[int, int]) -> np.ndarray:
        """Mark one window of a larger frame: the same pixels ``embed(frame)[window]`` gives, at the window's cost.

        Why: a full-frame video whose only moving part is the head (``generation.framing``) changes a small window
        per frame; marking is local to each block (its own Haar LL band, DCT and SVD), so the still picture is
        marked once and each frame marks only its window. The window must start on the block grid (``origin``
        a multiple of the block's pixel side) and end on it or at the frame's edge.

        Args:
            window_rgb: (h, w, 3) uint8 RGB, the frame's pixels [y0:y0+h, x0:x0+w].
            origin: (y0, x0) of the window in the frame. frame_shape: (H, W) of the whole frame.
        Returns:
            A marked copy of the window.
        """
        height, width = frame_shape
        error = _size_error(height, width, min_pixels=MIN_PIXELS, min_side=MIN_SIDE)
        if error:
            raise InvalidFrame(error)
        if window_rgb.dtype != np.uint8 or window_rgb.ndim != 3 or window_rgb.shape[2] != 3:
            raise InvalidFrame(f"expected an (h, w, 3) uint8 RGB window, got {window_rgb.shape} {window_rgb.dtype}")
        side = self.scheme.pixels_per_block
        y0, x0 = origin
        h, w = window_rgb.shape[:2]
        if y0 % side or x0 % side or y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
            raise ValueError(f"a window must start on the {side}-pixel block grid inside the frame, got {origin}")
        if (h % side and y0 + h != height) or (w % side and x0 + w != width):
            raise ValueError(f"a window must end on the {side}-pixel block grid or at the frame's edge")
        nby, nbx = _dwtdctsvd.grid_shape(height, width, block=self.scheme.block)
        by0, bx0 = y0 // side, x0 // side
        wy, wx = max(0, min(h // side, nby - by0)), max(0, min(w // side, nbx - bx0))
        out = window_rgb.copy()
        if wy == 0 or wx == 0:  # only pixels right of / below the frame's last whole block: never marked
            return out
        grid = self._grids.get((nby, nbx))
        if grid is None:
            grid = self._grids[(nby, nbx)] = _tile.grid_bits(self._tile, nby, nbx)
        bits = grid[by0 : by0 + wy, bx0 : bx0 + wx]
        region = np.ascontiguousarray(window_rgb[: wy * side, : wx * side])
        out[: wy * side, : wx * side] = _dwtdctsvd.embed_block_bits(
            region, bits, scale=self.strength, block=self.scheme.block
        )
        return out

    def embed_many(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Mark frames lazily, one at a time, so long videos stream with flat memory."""
        for frame in frames:
            yield self.embed(frame)


@dataclass(frozen=True)
class WatermarkDetection:
    """What the detector read.

    found: a BCH codeword within 8 bit errors whose payload passes the key check.
    tag / payload: the generation tag and the valid payload when found, else None.
    confidence: when found, the mean per-bit margin of the vote agreeing with the decoded codeword (1 = every
        block of every frame read perfectly, near 0 = barely above chance); 0.0 when not found.
    frames_agreeing: share of decoded frames that would decode to the same codeword on their own.
    frames_decoded: frames large enough to read; frames_skipped: frames too small or not RGB uint8.
    bit_margin: mean |vote| per codeword bit at the best grid offset of the first try, found or not (diagnostics).
    grid_offset / gain / phase: where the mark was found (pixel offset of the block grid in the frame resampled to
        the marked scale, chroma gain undone, tile phase); None when not found.
    algorithm: the scheme's id (v3, or v2 for older outputs); scale: served size / marked size the mark was read
        at (0.5: a half-size rendition); None when not found.
    attempts: BCH + key-check attempts made (<= MAX_ATTEMPTS); codewords: attempts that gave a BCH codeword
        (before the key check: on unmarked content these are the near misses the HMAC stops).
    """

    found: bool
    tag: int | None
    payload: WatermarkPayload | None
    confidence: float
    frames_agreeing: float
    frames_decoded: int
    frames_skipped: int
    bit_margin: float
    grid_offset: tuple[int, int] | None = None
    gain: float | None = None
    phase: tuple[int, int] | None = None
    attempts: int = 0
    codewords: int = 0
    algorithm: str | None = None
    scale: float | None = None


@dataclass(frozen=True)
class _Found:
    payload: WatermarkPayload
    confidence: float
    frames_agreeing: float
    bit_margin: float
    offset: tuple[int, int]
    gain: float
    phase: tuple[int, int]


@dataclass(frozen=True)
class _Candidate:
    offset: tuple[int, int]
    gain: float
    score: float


def _resample(u: np.ndarray, factor: float) -> np.ndarray:
    """A U plane enlarged (factor > 1) or shrunk by `factor`; 1.0 returns it unchanged."""
    if abs(factor - 1.0) < 1e-9:
        return u
    height, width = u.shape
    size = (max(round(width * factor), 1), max(round(height * factor), 1))
    # Enlarging or shrinking a little: bilinear (a block's mean, all the mark carries, is kept, and it costs a
    # quarter of area averaging); shrinking more: pixel-area averaging, which does not alias.
    return cv2.resize(u, size, interpolation=cv2.INTER_LINEAR if factor > 0.8 else cv2.INTER_AREA)


@dataclass(frozen=True)
class _Try:
    """One way to read the served frames: `block`-sided LL blocks with QIM step `strength`, after resampling the
    frames by `factor` (1.0 when the served scale puts the marked blocks on a whole number of pixels)."""

    scale: float
    block: int
    strength: float
    factor: float


def _plan(scheme: WatermarkScheme, scales: tuple[float, ...]) -> list[_Try]:
    """Served at `scale`, a block of the mark covers scheme.block * scale LL samples: when that is a whole number
    (0.5, 0.75, 1.5 for v3) the frame is read as served with blocks of that size, and the QIM step scaled with it
    (s0 grows with the block side); otherwise the frame is resampled to the nearest whole block first."""
    out: list[_Try] = []
    for scale in scales:
        exact = scheme.block * scale
        block = max(2, round(exact))
        out.append(_Try(scale, block, scheme.strength * block / scheme.block, block / exact))
    return out


class _Reader:
    """Grid search and decoding for one block size and QIM step, on planes already resampled."""

    def __init__(self, block: int, strength: float, key: bytes, bch: _ecc.Bch) -> None:
        self.block = block
        self.strength = strength
        side = 2 * block
        self.offsets = [(oy, ox) for oy in range(side) for ox in range(side)]
        self._key = key
        self._bch = bch

    def _s0(self, plane: np.ndarray, oy: int, ox: int) -> np.ndarray:
        return _dwtdctsvd.block_s0(plane, oy=oy, ox=ox, exact=False, block=self.block)

    def _cell_votes(self, s0: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Block s0 (nby, nbx) -> vote sums per tile cell for each gain, (G, 120)."""
        soft = _dwtdctsvd.soft_bits(s0[None], scale=self.strength, gain=gains[:, None, None], block=self.block)
        return _tile.cell_sums(soft).astype(np.float64)  # (G, 120)

    def _coherence(self, stacks: list[np.ndarray]) -> np.ndarray:
        """Per offset, the most coherent of the ranking gains, as a share of the blocks read: (O,) in [0, 1].

        stacks: per search frame, (O, nby, nbx) block s0 of O offsets on a common grid.
        """
        totals = np.zeros((_RANK_GAINS.size, stacks[0].shape[0], _tile.CELLS))  # (G, O, 120)
        for stack in stacks:
            soft = _dwtdctsvd.soft_bits(
                stack[None], scale=self.strength, gain=_RANK_GAINS[:, None, None, None], block=self.block
            )  # (G, O, nby, nbx)
            totals += _tile.cell_sums(soft)
        blocks = sum(stack.shape[1] * stack.shape[2] for stack in stacks)
        return np.abs(totals).sum(axis=2).max(axis=0) / max(blocks, 1)

    def search(self, planes: list[np.ndarray]) -> list[_Candidate]:
        """Best grid offsets (with their chroma gain) by coherence of the cell sums over a few frames, best first.

        Offsets are ranked on three gains (near-grey blocks read the same under any gain, so the right offset
        stands out on a coarse set); the gain is then searched only for the best offsets, coarse then fine.
        Blocks wider than 8 pixels are ranked on a coarser offset lattice (a pixel or two of misalignment moves a
        16-pixel block's mean by little), then refined pixel by pixel around the best.
        """
        step = max(1, self.block // 4)
        picks = np.unique(np.linspace(0, len(planes) - 1, min(SEARCH_FRAMES, len(planes))).round().astype(int))
        every = [_dwtdctsvd.frobenius_s0_all_offsets(planes[i], block=self.block) for i in picks]
        nby = min(a.shape[0] for e in every for a in e.values())
        nbx = min(a.shape[1] for e in every for a in e.values())

        def scores(offsets: list[tuple[int, int]]) -> dict[tuple[int, int], float]:
            stacks = [np.stack([e[o][:nby, :nbx] for o in offsets]) for e in every]  # (O, nby, nbx) per frame
            return dict(zip(offsets, self._coherence(stacks).tolist(), strict=True))

        side = 2 * self.block
        coarse = scores([(oy, ox) for oy in range(0, side, step) for ox in range(0, side, step)])
        ranked = sorted(coarse, key=coarse.__getitem__, reverse=True)[:CANDIDATES]
        if step > 1:
            near = sorted(
                {
                    ((oy + dy) % side, (ox + dx) % side)
                    for oy, ox in ranked
                    for dy in range(1 - step, step)
                    for dx in range(1 - step, step)
                }  # fmt: skip
            )
            fine = scores(near)
            ranked = sorted(fine, key=fine.__getitem__, reverse=True)[:CANDIDATES]
            coarse = fine
        out = []
        for offset in ranked:
            gains = _COARSE_GAINS
            for _ in range(2):  # coarse grid, then +-0.02 around its best
                total = sum(self._cell_votes(e[offset], gains) for e in every)  # (G, 120)
                gain = float(gains[int(np.argmax(np.abs(total).sum(axis=1)))])
                gains = gain + _FINE_STEPS
            out.append(_Candidate(offset, gain, coarse[offset]))
        return out

    def decode(self, planes: list[np.ndarray]) -> tuple[_Found | None, float, int, int]:
        """Try the best offsets through BCH + key check: (found fields or None, bit margin, attempts, codewords)."""
        margin = 0.0
        attempts = codewords = 0
        for rank, cand in enumerate(self.search(planes)):
            gain = np.array([cand.gain])
            oy, ox = cand.offset
            per_frame = np.stack(  # (T, 120) vote sums per reader cell
                # s0 as the Frobenius norm: within a unit of the top singular value on chroma blocks, a tenth the cost
                [self._cell_votes(self._s0(p, oy, ox), gain)[0] for p in planes]
            )
            counts = np.zeros(_tile.CELLS)
            for p in planes:
                nby, nbx = _dwtdctsvd.grid_shape(p.shape[0], p.shape[1], oy, ox, block=self.block)
                counts += np.bincount(_tile.cell_of_block(nby, nbx), minlength=_tile.CELLS)
            votes = per_frame.sum(axis=0)  # (120,)
            bit_margin = float(np.mean(np.abs(votes) / np.maximum(counts, 1)))
            if rank == 0:
                margin = bit_margin
            all_soft = _tile.codeword_soft_all_phases(votes)  # (120 phases, 120 bits)
            for phase, soft in zip(_tile.PHASES, all_soft, strict=True):
                attempts += 1
                decoded = self._bch.decode((soft > 0).astype(np.uint8))
                if decoded is None:
                    continue
                codewords += 1
                payload = WatermarkPayload.from_bytes(decoded[0])
                if not payload.is_valid(self._key):
                    continue
                signs = 2.0 * payload.codeword().astype(np.float64) - 1.0  # (120,)
                norm = _tile.codeword_soft(counts, *phase) * np.where(_tile.WHITEN == 1, -1.0, 1.0)
                confidence = float(np.clip(np.mean(signs * soft / np.maximum(norm, 1)), 0.0, 1.0))
                frame_soft = _tile.codeword_soft(per_frame, *phase)  # (T, 120)
                wrong = np.sum((frame_soft > 0) != (signs > 0)[None, :], axis=1)  # (T,)
                agreeing = float(np.mean(wrong <= _ecc.T))
                found = _Found(payload, confidence, agreeing, bit_margin, cand.offset, cand.gain, phase)
                return found, margin, attempts, codewords
        return None, margin, attempts, codewords


class WatermarkDetector:
    """Finds the block grid, votes the codeword across frames, decodes it and checks it with the service key.

    Tries each of `scales` (served size / marked size) in order and stops at the first valid payload. A v2 mark
    (8x8-pixel blocks, step 56) has exactly the geometry of a v3 mark served at half size, so the 0.5 try also
    reads outputs made before v3 (at their own size); the payload and its key check are the same in both.
    """

    def __init__(
        self,
        key: bytes,
        *,
        scheme: WatermarkScheme = SCHEME_V3,
        scales: tuple[float, ...] = DEFAULT_SCALES,
        native_sizes: tuple[int, ...] = DEFAULT_NATIVE_SIZES,
    ) -> None:
        _check_key(key)
        if not scales or len(scales) > len(DEFAULT_SCALES) or any(not 0.25 <= s <= 4.0 for s in scales):
            raise ValueError(f"a detector needs 1 to {len(DEFAULT_SCALES)} scales in [0.25, 4], got {scales}")
        if any(n < 64 for n in native_sizes):
            raise ValueError(f"native sizes must be >= 64 pixels, got {native_sizes}")
        self._key = bytes(key)
        self.scheme = scheme
        self.scales = tuple(scales)
        self.native_sizes = tuple(native_sizes)
        self.tries = _plan(scheme, self.scales)

    def size_scales(self, height: int, width: int) -> list[float]:
        """Scales a frame's own size suggests: each side over each native size, when that is a plausible
        rendition not already tried (more than 1 % from every scale of `scales`); at most MAX_SIZE_SCALES."""
        out: list[float] = []
        for native in self.native_sizes:
            for side in sorted({height, width}):
                scale = side / native
                lo, hi = _SIZE_SCALE_RANGE
                if lo <= scale <= hi and all(abs(scale / t - 1.0) > 0.01 for t in (*self.scales, *out)):
                    out.append(scale)
        return out[:MAX_SIZE_SCALES]

    def detect(self, frames: Iterable[np.ndarray], *, max_frames: int = 60) -> WatermarkDetection:
        """Read the first `max_frames` frames of `frames` (sample the video upstream, e.g. `every=`).

        Frames that cannot carry a mark (too small, not RGB uint8) are counted as skipped, not raised: a
        detector must answer for any upload.
        """
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        served: list[np.ndarray] = []
        skipped = 0
        for count, frame in enumerate(frames):
            if count >= max_frames:
                break
            if _frame_error(frame, min_pixels=MIN_DETECT_PIXELS, min_side=MIN_SIDE // 2):
                skipped += 1
                continue
            served.append(_dwtdctsvd.u_plane(frame))
        if not served:
            return WatermarkDetection(False, None, None, 0.0, 0.0, 0, skipped, 0.0)
        bch = _ecc.Bch()
        first_margin: float | None = None
        attempts = codewords = 0
        tries = self.tries + _plan(self.scheme, tuple(self.size_scales(*served[0].shape)))
        for attempt in tries:
            planes = [_resample(u, attempt.factor) for u in served]
            # At least half a tile of blocks each way (fewer leave most tile cells without a vote).
            side = 2 * attempt.block
            planes = [p for p in planes if p.shape[0] >= side * _tile.TILE_ROWS // 2 and p.shape[1] >= side * 6]
            if not planes:
                continue
            reader = _Reader(attempt.block, attempt.strength, self._key, bch)
            found, margin, n_attempts, n_codewords = reader.decode(planes)
            attempts, codewords = attempts + n_attempts, codewords + n_codewords
            if first_margin is None:
                first_margin = margin
            if found is not None:
                return WatermarkDetection(
                    True, found.payload.tag, found.payload, found.confidence, found.frames_agreeing, len(served),
                    skipped, found.bit_margin, found.offset, found.gain, found.phase, attempts, codewords,
                    self.scheme.algorithm, attempt.scale,
                )  # fmt: skip
        return WatermarkDetection(
            False, None, None, 0.0, 0.0, len(served), skipped, first_margin or 0.0, attempts=attempts,
            codewords=codewords,
        )  # fmt: skip
