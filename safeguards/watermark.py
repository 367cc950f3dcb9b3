"""Invisible, keyed, error-corrected watermark on every frame (dwtDctSvd + BCH + HMAC), and its detector.

Why this shape: marking and detecting are separate objects (the marker only needs a minted payload; the detector
needs the key to tell a real mark from noise).

Payload (64 bits): a 32-bit generation tag stored with the generation, plus a 32-bit keyed check
`HMAC-SHA256(key, b"provatar-wm-v1" + tag)[:4]`: only the key holder can mint a valid payload.
Channel code: BCH(120, 64, t=8) (`safeguards._ecc`) -> 120 codeword bits, laid out as a 10 x 12-block tile repeated
over the whole frame (`safeguards._tile`), one bit per 8x8-pixel block by dwtDctSvd quantisation of the U channel
(`safeguards._dwtdctsvd`). A 512x512 frame holds 34 copies of every bit.

Detection: each block gives a soft vote in [-1, 1]; votes are summed per tile cell over blocks and frames, so a
frame the encoder smeared still adds its evidence. Because platforms crop and change brightness, the detector
first searches the block grid's pixel offset (8 x 8) and a chroma gain (brightness x0.75..x1.25) on a few frames,
scoring each by how coherent the cell sums are (a tile phase only permutes cells, so the score ignores it); for the
best offsets it tries all 120 tile phases through the BCH decoder and the keyed check. A payload is only reported
when a BCH codeword within 8 bit errors carries a tag whose HMAC matches: for unmarked content each attempt
succeeds with probability <= RANDOM_DECODE_BOUND * 2^-32 (about 2^-47.6), and a detection makes at most
`MAX_ATTEMPTS` attempts, so `FALSE_POSITIVE_BOUND` (about 2^-39.7 = 1.1e-12) bounds the chance per clip.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from safeguards import _dwtdctsvd, _ecc, _tile
from safeguards.errors import InvalidFrame, InvalidWatermarkPayload

__all__ = [
    "ALGORITHM_ID",
    "DEFAULT_STRENGTH",
    "FALSE_POSITIVE_BOUND",
    "MIN_KEY_BYTES",
    "TAG_BITS",
    "WATERMARK_ALGORITHM",
    "WatermarkDetection",
    "WatermarkDetector",
    "WatermarkPayload",
    "Watermarker",
]

ALGORITHM_ID = "org.provatar.watermark.dwtdctsvd-bch.v2"
WATERMARK_ALGORITHM = ALGORITHM_ID  # the name the pipeline and the C2PA manifest use
TAG_BITS = 32  # the generation tag's width (service.models.Generation.watermark_tag)
# dwtDctSvd quantisation step on s0. With nearest-lattice embedding, 56 gives ~40 dB PSNR on the RGB frame;
# see bench/eval_watermark.py for the robustness it buys.
DEFAULT_STRENGTH = 56.0
MIN_KEY_BYTES = 16
# The packaged transform refuses frames under 256x256 pixels; so do we, for the same reason (too few blocks).
MIN_PIXELS = 256 * 256
MIN_SIDE = 64  # a strip narrower than this has too few rows of blocks to find the grid in

# Detector search space. Offsets: every pixel phase of the 8x8 block grid. Gains: a coarse grid for the search,
# refined around the winner; brightness changes of +-25 % are covered.
_OFFSETS = [(oy, ox) for oy in range(_dwtdctsvd.PIXELS_PER_BLOCK) for ox in range(_dwtdctsvd.PIXELS_PER_BLOCK)]
_COARSE_GAINS = np.round(np.arange(0.76, 1.2401, 0.03), 4)  # 17 gains
_RANK_GAINS = np.array([0.82, 1.0, 1.18])
_FINE_STEPS = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])
SEARCH_FRAMES = 8  # frames (evenly spread) used to find offset and gain
CANDIDATES = 2  # best grid offsets tried through the decoder
MAX_ATTEMPTS = CANDIDATES * _tile.CELLS  # BCH + HMAC attempts per detection
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


def _validate_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InvalidFrame(f"expected an (H, W, 3) uint8 RGB frame, got shape {shape} dtype {dtype}")
    if frame.shape[0] * frame.shape[1] < MIN_PIXELS or min(frame.shape[:2]) < MIN_SIDE:
        raise InvalidFrame(
            f"a {frame.shape[1]}x{frame.shape[0]} frame is too small to carry the watermark "
            f"(needs >= 256x256 pixels and sides >= {MIN_SIDE})"
        )


class Watermarker:
    """Embeds one generation's payload into frames; stateless per frame, so frames are marked as they stream."""

    def __init__(self, payload: WatermarkPayload, *, strength: float = DEFAULT_STRENGTH) -> None:
        if not 8.0 <= strength <= 128.0:
            raise InvalidWatermarkPayload(f"watermark strength must be in [8, 128], got {strength}")
        self.payload = payload
        self.strength = float(strength)
        self._tile = _tile.tile_bits(payload.codeword())  # (10, 12)
        self._grids: dict[tuple[int, int], np.ndarray] = {}  # block bits per frame size

    def embed(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Return a marked copy of an (H, W, 3) uint8 RGB frame (>= 256x256 pixels)."""
        _validate_frame(frame_rgb)
        nby, nbx = _dwtdctsvd.grid_shape(frame_rgb.shape[0], frame_rgb.shape[1])
        grid = self._grids.get((nby, nbx))
        if grid is None:  # benign race under threads: both compute the same array
            grid = self._grids[(nby, nbx)] = _tile.grid_bits(self._tile, nby, nbx)
        return _dwtdctsvd.embed_block_bits(frame_rgb, grid, scale=self.strength)

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
    bit_margin: mean |vote| per codeword bit at the best grid offset, found or not (diagnostics).
    grid_offset / gain / phase: where the mark was found (pixel offset of the block grid, chroma gain undone,
        tile phase); None when not found.
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


@dataclass(frozen=True)
class _Candidate:
    offset: tuple[int, int]
    gain: float
    score: float


class WatermarkDetector:
    """Finds the block grid, votes the codeword across frames, decodes it and checks it with the service key."""

    def __init__(self, key: bytes, *, strength: float = DEFAULT_STRENGTH) -> None:
        _check_key(key)
        self._key = bytes(key)
        self.strength = float(strength)

    def _cell_votes(self, s0: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Block s0 (nby, nbx) -> vote sums per tile cell for each gain, (G, 120)."""
        soft = _dwtdctsvd.soft_bits(s0[None], scale=self.strength, gain=gains[:, None, None])  # (G, nby, nbx)
        return _tile.cell_sums(soft).astype(np.float64)

    def _search(self, planes: list[np.ndarray]) -> list[_Candidate]:
        """Best grid offsets (with their chroma gain) by coherence of the cell sums over a few frames, best first.

        Offsets are ranked on three gains (near-grey blocks read the same under any gain, so the right offset
        stands out on a coarse set); the gain is then searched only for the best offsets, coarse then fine.
        """
        picks = np.unique(np.linspace(0, len(planes) - 1, min(SEARCH_FRAMES, len(planes))).round().astype(int))
        totals = np.zeros((_RANK_GAINS.size, len(_OFFSETS), _tile.CELLS))  # (G, 64, 120)
        blocks = 0
        s0_cache: dict[tuple[int, int], list[np.ndarray]] = {offset: [] for offset in _OFFSETS}
        for i in picks:
            every = _dwtdctsvd.frobenius_s0_all_offsets(planes[i])
            nby = min(a.shape[0] for a in every.values())
            nbx = min(a.shape[1] for a in every.values())
            stack = np.stack([every[o][:nby, :nbx] for o in _OFFSETS])  # (64, nby, nbx), common grid
            soft = _dwtdctsvd.soft_bits(stack[None], scale=self.strength, gain=_RANK_GAINS[:, None, None, None])
            totals += _tile.cell_sums(soft)  # (G, 64, 120)
            blocks += nby * nbx
            for offset in _OFFSETS:
                s0_cache[offset].append(every[offset])
        # Per offset, the most coherent of the ranking gains, as a share of the blocks read: in [0, 1].
        best = np.abs(totals).sum(axis=2).max(axis=0) / max(blocks, 1)  # (64,)
        score = {o: float(best[k]) for k, o in enumerate(_OFFSETS)}
        ranked = sorted(_OFFSETS, key=lambda o: score[o], reverse=True)
        out = []
        for offset in ranked[:CANDIDATES]:
            gains = _COARSE_GAINS
            for _ in range(2):  # coarse grid, then +-0.02 around its best
                total = sum(self._cell_votes(s0, gains) for s0 in s0_cache[offset])  # (G, 120)
                gain = float(gains[int(np.argmax(np.abs(total).sum(axis=1)))])
                gains = gain + _FINE_STEPS
            out.append(_Candidate(offset, gain, score[offset]))
        return out

    def detect(self, frames: Iterable[np.ndarray], *, max_frames: int = 60) -> WatermarkDetection:
        """Read the first `max_frames` frames of `frames` (sample the video upstream, e.g. `every=`).

        Frames that cannot carry a mark (too small, not RGB uint8) are counted as skipped, not raised: a
        detector must answer for any upload.
        """
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        planes: list[np.ndarray] = []
        skipped = 0
        for count, frame in enumerate(frames):
            if count >= max_frames:
                break
            try:
                _validate_frame(frame)
            except InvalidFrame:
                skipped += 1
                continue
            planes.append(_dwtdctsvd.u_plane(frame))
        if not planes:
            return WatermarkDetection(False, None, None, 0.0, 0.0, 0, skipped, 0.0)
        bch = _ecc.Bch()
        best_margin = 0.0
        attempts = codewords = 0
        for rank, cand in enumerate(self._search(planes)):
            gain = np.array([cand.gain])
            per_frame = np.stack(  # (T, 120) vote sums per reader cell
                [
                    self._cell_votes(_dwtdctsvd.block_s0(p, oy=cand.offset[0], ox=cand.offset[1]), gain)[0]
                    for p in planes
                ]
            )
            counts = np.zeros(_tile.CELLS)
            for p in planes:
                nby, nbx = _dwtdctsvd.grid_shape(p.shape[0], p.shape[1], *cand.offset)
                counts += np.bincount(_tile.cell_of_block(nby, nbx), minlength=_tile.CELLS)
            votes = per_frame.sum(axis=0)  # (120,)
            if rank == 0:
                best_margin = float(np.mean(np.abs(votes) / np.maximum(counts, 1)))
            all_soft = _tile.codeword_soft_all_phases(votes)  # (120 phases, 120 bits)
            for phase, soft in zip(_tile.PHASES, all_soft, strict=True):
                attempts += 1
                decoded = bch.decode((soft > 0).astype(np.uint8))
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
                return WatermarkDetection(
                    True, payload.tag, payload, confidence, agreeing, len(planes), skipped,
                    float(np.mean(np.abs(votes) / np.maximum(counts, 1))),
                    cand.offset, cand.gain, phase, attempts, codewords,
                )  # fmt: skip
        return WatermarkDetection(
            False, None, None, 0.0, 0.0, len(planes), skipped, best_margin, attempts=attempts, codewords=codewords
        )
