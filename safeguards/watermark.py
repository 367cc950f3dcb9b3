"""Invisible, keyed watermark on every frame (dwtDctSvd), and its detector.

Why this shape: marking and detecting are separate objects (the marker never needs the key, only a minted
payload; the detector needs the key to tell a real mark from noise). The payload is 64 bits: a random 32-bit
generation tag stored with the generation, plus a 32-bit keyed check `HMAC-SHA256(key, b"provatar-wm-v1" +
tag)[:4]`, so an unmarked video decodes to a valid payload with probability 2^-32 per attempt and only the key
holder can mint a valid mark. Each frame carries the whole payload (repeated over all 4x4 blocks of the chroma
LL band); the detector votes each bit across frames with the mean of per-frame soft bits, which is what lets
the mark survive H.264 (dwtDct alone does not).

Extending (issue 5): subclass `WatermarkPayload` with a larger `N_BITS`, a new `VERSION`/`ALGORITHM`, and
override `to_bits` / `from_bits` / `decode_soft` (e.g. BCH or Reed-Solomon over soft bits); `Watermarker` and
`WatermarkDetector` only use that interface.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from safeguards import _dwtdctsvd
from safeguards.errors import InvalidFrame, InvalidWatermarkPayload

__all__ = [
    "ALGORITHM_ID",
    "DEFAULT_STRENGTH",
    "MIN_KEY_BYTES",
    "WATERMARK_ALGORITHM",
    "WatermarkDetection",
    "WatermarkDetector",
    "WatermarkPayload",
    "Watermarker",
]

ALGORITHM_ID = "org.provatar.watermark.dwtdctsvd.v1"
WATERMARK_ALGORITHM = ALGORITHM_ID  # the name the pipeline and the C2PA manifest use
# dwtDctSvd quantisation step. The package default, 36, lost 2-3 of 64 bits to libx264 CRF 28 on a 512x512
# face even after voting 50 frames; 56 left a worst voted bit margin of 0.09-0.18 over 10 tags (chroma PSNR
# about 38 dB).
DEFAULT_STRENGTH = 56.0
MIN_KEY_BYTES = 16
# The packaged transform refuses frames under 256x256 pixels; so do we, for the same reason (too few blocks).
MIN_PIXELS = 256 * 256


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
        raise InvalidWatermarkPayload(
            f"the watermark key must be at least {MIN_KEY_BYTES} bytes; use the service's secret key material"
        )


@dataclass(frozen=True)
class WatermarkPayload:
    """Version 1 payload: 32-bit generation tag + 32-bit keyed check, big-endian, 64 bits."""

    tag: int
    check: bytes

    VERSION: ClassVar[int] = 1
    N_BITS: ClassVar[int] = 64
    ALGORITHM: ClassVar[str] = ALGORITHM_ID
    _DOMAIN: ClassVar[bytes] = b"provatar-wm-v1"

    def __post_init__(self) -> None:
        if not 0 <= self.tag < 2**32:
            raise InvalidWatermarkPayload(f"the watermark tag must be a 32-bit unsigned int, got {self.tag}")
        if len(self.check) != 4:
            raise InvalidWatermarkPayload(f"the watermark check must be 4 bytes, got {len(self.check)}")

    @staticmethod
    def new_tag() -> int:
        """A fresh random 32-bit tag for one generation (the service stores it to resolve detections)."""
        return secrets.randbits(32)

    @classmethod
    def keyed_check(cls, key: bytes, tag: int) -> bytes:
        """The 4-byte HMAC a valid payload must carry for `tag`."""
        _check_key(key)
        if not 0 <= tag < 2**32:
            raise InvalidWatermarkPayload(f"the watermark tag must be a 32-bit unsigned int, got {tag}")
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
        if len(raw) != cls.N_BITS // 8:
            raise InvalidWatermarkPayload(f"expected {cls.N_BITS // 8} payload bytes, got {len(raw)}")
        return cls(tag=int.from_bytes(raw[:4], "big"), check=raw[4:8])

    def to_bits(self) -> np.ndarray:
        """The embedded bit vector, (N_BITS,) uint8 of 0/1, most significant bit first."""
        return np.unpackbits(np.frombuffer(self.to_bytes(), dtype=np.uint8))

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> WatermarkPayload:
        """Inverse of `to_bits` (no key check: call `is_valid`)."""
        arr = np.asarray(bits)
        if arr.shape != (cls.N_BITS,):
            raise InvalidWatermarkPayload(f"expected {cls.N_BITS} bits, got shape {arr.shape}")
        raw = np.packbits((arr != 0).astype(np.uint8)).tobytes()
        return cls(tag=int.from_bytes(raw[:4], "big"), check=raw[4:8])

    @classmethod
    def decode_soft(cls, soft: np.ndarray, key: bytes) -> WatermarkPayload | None:
        """Turn voted soft bits (P(bit = 1), in [0, 1]) into a payload that passes the key check, or None.

        Version 1 has no error correction: a hard decision at 0.5, then the check. One attempt per call, so
        the chance that unmarked content yields a payload is 2^-32 per call.
        """
        payload = cls.from_bits((np.asarray(soft) > 0.5).astype(np.uint8))
        return payload if payload.is_valid(key) else None


def _validate_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise InvalidFrame(f"expected an (H, W, 3) uint8 RGB frame, got shape {shape} dtype {dtype}")
    if frame.shape[0] * frame.shape[1] < MIN_PIXELS:
        raise InvalidFrame(
            f"a {frame.shape[1]}x{frame.shape[0]} frame is too small to carry the watermark "
            "(needs >= 256x256 pixels)"
        )


class Watermarker:
    """Embeds one generation's payload into frames; stateless, so frames are marked as they stream."""

    def __init__(self, payload: WatermarkPayload, *, strength: float = DEFAULT_STRENGTH) -> None:
        if not 8.0 <= strength <= 128.0:
            raise InvalidWatermarkPayload(f"watermark strength must be in [8, 128], got {strength}")
        self.payload = payload
        self.strength = float(strength)
        self._bits = payload.to_bits()

    def embed(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Return a marked copy of an (H, W, 3) uint8 RGB frame (>= 256x256 pixels)."""
        _validate_frame(frame_rgb)
        bgr = np.ascontiguousarray(frame_rgb[:, :, ::-1])
        marked = _dwtdctsvd.embed_bits(bgr, self._bits, scale=self.strength)
        return np.ascontiguousarray(marked[:, :, ::-1])

    def embed_many(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Mark frames lazily, one at a time, so long videos stream with flat memory."""
        for frame in frames:
            yield self.embed(frame)


@dataclass(frozen=True)
class WatermarkDetection:
    """What the detector read.

    found: the voted bits form a payload that passes the key check.
    tag: the generation tag when found, else None.
    payload: the valid payload when found, else None.
    confidence: when found, the mean per-bit margin |2p - 1| of the vote (1 = every block of every frame
        agreed, near 0 = barely above chance); 0.0 when not found: a margin on unkeyed bits is no evidence.
    frames_agreeing: share of decoded frames whose own hard bits equal the voted payload's bits.
    frames_decoded: frames large enough to read; frames_skipped: frames too small or not RGB uint8.
    bit_margin: the mean per-bit margin whether or not found (diagnostics; flat images score high).
    """

    found: bool
    tag: int | None
    payload: WatermarkPayload | None
    confidence: float
    frames_agreeing: float
    frames_decoded: int
    frames_skipped: int
    bit_margin: float


class WatermarkDetector:
    """Reads and votes the payload across frames and checks it with the service key."""

    def __init__(
        self,
        key: bytes,
        *,
        strength: float = DEFAULT_STRENGTH,
        payload_type: type[WatermarkPayload] = WatermarkPayload,
    ) -> None:
        _check_key(key)
        self._key = bytes(key)
        self.strength = float(strength)
        self.payload_type = payload_type

    def soft_bits(self, frame_rgb: np.ndarray) -> np.ndarray:
        """Per-bit share of blocks voting 1 in one frame, (N_BITS,) float in [0, 1]. Raises InvalidFrame."""
        _validate_frame(frame_rgb)
        bgr = np.ascontiguousarray(frame_rgb[:, :, ::-1])
        return _dwtdctsvd.soft_bits(bgr, n_bits=self.payload_type.N_BITS, scale=self.strength)

    def detect(self, frames: Iterable[np.ndarray], *, max_frames: int = 60) -> WatermarkDetection:
        """Vote over the first `max_frames` frames of `frames` (sample the video upstream, e.g. `every=`).

        Frames that cannot carry a mark (too small, not RGB uint8) are counted as skipped, not raised: a
        detector must answer for any upload.
        """
        if max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        per_frame: list[np.ndarray] = []
        skipped = 0
        for count, frame in enumerate(frames):
            if count >= max_frames:
                break
            try:
                per_frame.append(self.soft_bits(frame))
            except InvalidFrame:
                skipped += 1
        if not per_frame:
            return WatermarkDetection(False, None, None, 0.0, 0.0, 0, skipped, 0.0)
        soft = np.stack(per_frame)  # (T, N_BITS)
        voted = soft.mean(axis=0)  # (N_BITS,)
        margin = float(np.mean(np.abs(2.0 * voted - 1.0)))
        hard = voted > 0.5
        agreeing = float(np.mean(np.all((soft > 0.5) == hard[None, :], axis=1)))
        payload = self.payload_type.decode_soft(voted, self._key)
        decoded = len(per_frame)
        if payload is None:
            return WatermarkDetection(False, None, None, 0.0, agreeing, decoded, skipped, margin)
        return WatermarkDetection(True, payload.tag, payload, margin, agreeing, decoded, skipped, margin)
