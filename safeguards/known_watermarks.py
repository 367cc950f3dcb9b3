"""Other generators' open invisible watermarks, read with their published (offline) decoder logic.

Why these: the Stable Diffusion reference scripts mark every output with invisible-watermark's `dwtDct` method and a
fixed, public message, so any image or video still carrying it names its generator family:

- `stable-diffusion-v1`: the bytes "StableDiffusionV1" (136 bits), CompVis/stable-diffusion scripts/txt2img.py;
- `stable-diffusion-v2`: the bytes "SDV2" (32 bits), Stability-AI/stablediffusion scripts/txt2img.py;
- `sdxl`: the 48-bit constant 0xB3EC907BB19E, Stability-AI/generative-models sgm/inference/helpers.py (SDXL and
  Stable Video Diffusion sampling) and diffusers' StableDiffusionXLWatermarker.

How `dwtDct` reads (invisible-watermark 0.2, `EmbedMaxDct`): the U channel of OpenCV's YUV, Haar LL band, 4x4
blocks in row-major order; block n votes for message bit n % len: its largest off-DC entry in magnitude, modulo the
step 36, above half a step reads 1. The bit is 1 when more than half its votes are 1 (votes are summed over all the
frames given, which only helps a video marked frame by frame). The reference scripts pass BGR uint8 to the encoder;
diffusers passes RGB floats, which lands the mark in the other chroma channel with float YUV's offset, so both
"paths" are read and the better one is reported.

A mark is `found` when the decoded bits agree with the known message so well that, for an unmarked image (bits that
agree by chance, each with probability 1/2), the binomial tail times the number of paths tried is below
`FOUND_P` (1e-6): 30 of 32 bits, 41 of 48, 97 of 136. These marks carry no key, so `found` says "made by a tool
that writes this public mark" (or by someone who copied it), never who made it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["FOUND_P", "KNOWN_WATERMARKS", "KnownWatermark", "KnownWatermarkResult", "check_known_watermarks"]

FOUND_P = 1e-6
MAX_FRAMES = 8  # frames of a video read (evenly spread); the marks are per frame, more adds little
MIN_PIXELS = 256 * 256  # the package refuses to decode smaller images
_STEP = 36.0  # dwtDct's default scales=[0, 36, 36]; the package's loop reads channel 1 (U) only
_BLOCK = 4


@dataclass(frozen=True)
class KnownWatermark:
    """A public dwtDct message: its name, the bits it embeds, and where that is written down."""

    name: str
    bits: tuple[int, ...]
    source: str


def _bytes_bits(text: str) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(text.encode("utf-8"), dtype=np.uint8)))


KNOWN_WATERMARKS = (
    KnownWatermark(
        "stable-diffusion-v1",
        _bytes_bits("StableDiffusionV1"),
        "CompVis/stable-diffusion scripts/txt2img.py: dwtDct, bytes 'StableDiffusionV1'",
    ),
    KnownWatermark(
        "stable-diffusion-v2",
        _bytes_bits("SDV2"),
        "Stability-AI/stablediffusion scripts/txt2img.py: dwtDct, bytes 'SDV2'",
    ),
    KnownWatermark(
        "sdxl",
        tuple(int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]),
        "Stability-AI/generative-models sgm/inference/helpers.py (SDXL, SVD), diffusers StableDiffusionXLWatermarker:"
        " dwtDct, 48 bits 0xB3EC907BB19E",
    ),
)
# (name, channel order handed to the encoder, YUV arithmetic): reference scripts BGR uint8; diffusers RGB floats.
_PATHS = (("reference-bgr-uint8", True, False), ("diffusers-rgb-float", False, True))


@dataclass(frozen=True)
class KnownWatermarkResult:
    """One known mark's reading.

    bit_agreement: share of the message's bits decoded as the known value (about 0.5 on unmarked content, 1.0 on a
        clean marked image); the best of the paths read.
    false_alarm_p: chance that unmarked content agrees at least this well on some path (binomial tail x paths).
    confidence: 1 - false_alarm_p when found, else 0.0.
    frames_checked: frames large enough to read (>= 256x256 pixels); path: where the best agreement was read.
    """

    name: str
    found: bool
    bit_agreement: float
    false_alarm_p: float
    confidence: float
    frames_checked: int
    path: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _binomial_tail(n: int, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n


def _block_votes(frame_rgb: np.ndarray, *, bgr_order: bool, float_yuv: bool) -> np.ndarray:
    """dwtDct's 0/1 vote of every LL block of one frame, row-major, (N,) float64."""
    image = frame_rgb[:, :, ::-1] if bgr_order else frame_rgb  # what the encoder was handed, read as BGR
    rows, cols = image.shape[0] // 4 * 4, image.shape[1] // 4 * 4
    image = np.ascontiguousarray(image[:rows, :cols])
    if float_yuv:  # OpenCV's float YUV: U offset 0.5 instead of 128, no rounding
        u = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_BGR2YUV)[:, :, 1].astype(np.float64)
    else:
        u = cv2.cvtColor(image, cv2.COLOR_BGR2YUV)[:, :, 1].astype(np.float64)
    ll = (u[0::2, 0::2] + u[0::2, 1::2] + u[1::2, 0::2] + u[1::2, 1::2]) * 0.5  # pywt haar LL, (rows/2, cols/2)
    nby, nbx = ll.shape[0] // _BLOCK, ll.shape[1] // _BLOCK
    blocks = ll[: nby * _BLOCK, : nbx * _BLOCK].reshape(nby, _BLOCK, nbx, _BLOCK).transpose(0, 2, 1, 3)
    flat = np.abs(blocks.reshape(nby * nbx, _BLOCK * _BLOCK)[:, 1:])  # (N, 15), the DC entry excluded
    val = flat[np.arange(flat.shape[0]), np.argmax(flat, axis=1)]
    return ((val % _STEP) > 0.5 * _STEP).astype(np.float64)


def check_known_watermarks(frames_rgb: Sequence[np.ndarray]) -> list[KnownWatermarkResult]:
    """Read every mark of `KNOWN_WATERMARKS` from up to `MAX_FRAMES` of `frames_rgb` ((H, W, 3) uint8 RGB).

    Frames under 256x256 pixels or of another shape are skipped (the decoder cannot read them); with none left each
    mark is reported not found with bit_agreement 0.
    """
    usable = [
        f for f in frames_rgb
        if isinstance(f, np.ndarray) and f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3
        and f.shape[0] * f.shape[1] >= MIN_PIXELS
    ]  # fmt: skip
    if len(usable) > MAX_FRAMES:
        usable = [usable[int(i)] for i in np.linspace(0, len(usable) - 1, MAX_FRAMES).round()]
    # Per path and message length: vote sums and counts per message bit, over blocks and frames.
    lengths = sorted({len(m.bits) for m in KNOWN_WATERMARKS})
    sums = {(p, n): np.zeros(n) for p, *_ in _PATHS for n in lengths}
    counts = {(p, n): np.zeros(n) for p, *_ in _PATHS for n in lengths}
    for frame in usable:
        for path, bgr_order, float_yuv in _PATHS:
            votes = _block_votes(frame, bgr_order=bgr_order, float_yuv=float_yuv)
            for n in lengths:
                index = np.arange(votes.size) % n
                sums[(path, n)] += np.bincount(index, weights=votes, minlength=n)
                counts[(path, n)] += np.bincount(index, minlength=n)
    results = []
    for mark in KNOWN_WATERMARKS:
        n = len(mark.bits)
        expected = np.array(mark.bits, dtype=bool)
        best_path: str | None = None
        best = 0
        for path, *_ in _PATHS:
            if not usable:
                break
            average = sums[(path, n)] / np.maximum(counts[(path, n)], 1)
            agree = int(np.sum((average * 255 > 127) == expected))  # the package's own decision rule
            if best_path is None or agree > best:
                best_path, best = path, agree
        p = min(1.0, len(_PATHS) * _binomial_tail(n, best)) if usable else 1.0
        found = bool(usable) and p < FOUND_P
        results.append(
            KnownWatermarkResult(
                name=mark.name,
                found=found,
                bit_agreement=best / n if usable else 0.0,
                false_alarm_p=p,
                confidence=1.0 - p if found else 0.0,
                frames_checked=len(usable),
                path=best_path,
                source=mark.source,
            )
        )
    return results
