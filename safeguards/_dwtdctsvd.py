"""Vectorised dwtDctSvd transform, compatible with invisible-watermark's `EmbedDwtDctSvd` at the block level.

Why our own: the packaged transform loops over 4x4 blocks in Python (about 60 ms to embed and 40 ms to decode
one 512x512 frame here), returns only hard bits, and only reads a frame whose block grid starts at pixel (0, 0).
The detector needs per-block soft values, at any grid offset (a cropped video), under a chroma gain (a
brightness change). The transform is the packaged one:

- RGB -> YUV (OpenCV's BT.601 "YUV"); the U channel (the package's `scales=[0, s, 0]`) is Haar-DWT'd once;
- the LL band is cut into 4x4 blocks (8x8 pixels); a block's largest singular value `s0` (of its DCT, which is
  the same as of the block: the DCT is orthogonal) carries one bit: quantisation index modulation with step
  `scale`, lattice `(k + 0.25 + 0.5 * bit) * scale`; reading takes `(s0 % scale) > scale / 2`.

So a block written here reads back with the packaged decoder and vice versa (tests/safeguards/test_watermark.py
checks both ways). Which bit goes into which block is the caller's business (`safeguards.watermark` uses a 2-D
periodic tile; the package uses `n % n_bits` in row-major order, see `packaged_block_bits`).

Deliberate differences from the packaged embedder, invisible to any decoder: `s0` moves to the *nearest* lattice
point of the wanted bit (the package moves it inside the current step, on average 2.4 dB more distortion); only
the LL band changes, so the inverse Haar step is exact (each 2x2 pixel group moves by half the LL change); and the
U change is applied straight to R, G, B (U + d -> G - 0.395 d, B + 2.032 d, luma unchanged), so Y and V are not
re-quantised through a YUV round trip.
"""

from __future__ import annotations

import cv2
import numpy as np

BLOCK = 4  # LL-band block side; one block covers 8x8 pixels
PIXELS_PER_BLOCK = 2 * BLOCK
# OpenCV RGB->YUV, U row (what `cv2.cvtColor(..., COLOR_BGR2YUV)[..., 1]` computes, before rounding).
_U_FROM_RGB = np.array([-0.14713, -0.28886, 0.436], dtype=np.float32)
# How R, G, B move for a unit change of U with Y and V held (OpenCV's YUV->RGB inverse).
_RGB_PER_U = np.array([0.0, -0.39465, 2.03211], dtype=np.float32)
# s0 of a neutral (grey, U = 128) block: LL = 2 * 2 * 128 / 2 = 256 on 16 entries -> 4 * 256.
NEUTRAL_S0 = 1024.0


def u_plane(rgb: np.ndarray) -> np.ndarray:
    """The U channel exactly as the packaged decoder sees it (uint8 YUV via OpenCV), as float32 (H, W)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV)[:, :, 1].astype(np.float32)


def grid_shape(height: int, width: int, oy: int = 0, ox: int = 0, *, block: int = BLOCK) -> tuple[int, int]:
    """Blocks per column and per row when the grid of `block`-sided LL blocks starts at pixel (oy, ox)."""
    return (height - oy) // (2 * block), (width - ox) // (2 * block)


def _ll(u: np.ndarray, oy: int, ox: int, nby: int, nbx: int, block: int = BLOCK) -> np.ndarray:
    """Haar LL band of the region starting at (oy, ox): (a + b + c + d) / 2 per 2x2 group, (nby*b, nbx*b)."""
    p = u[oy : oy + nby * 2 * block, ox : ox + nbx * 2 * block]
    return (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) * 0.5


def _to_blocks(ll: np.ndarray, nby: int, nbx: int, block: int = BLOCK) -> np.ndarray:
    """(nby*b, nbx*b) -> (nby*nbx, b, b), row-major block order."""
    return ll.reshape(nby, block, nbx, block).transpose(0, 2, 1, 3).reshape(nby * nbx, block, block)


def _from_blocks(blocks: np.ndarray, nby: int, nbx: int) -> np.ndarray:
    """Inverse of `_to_blocks`."""
    block = blocks.shape[-1]
    return blocks.reshape(nby, nbx, block, block).transpose(0, 2, 1, 3).reshape(nby * block, nbx * block)


def _top_singular(blocks: np.ndarray, iters: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest singular value and vectors of each (4, 4) block by power iteration on B^T B.

    Why not `np.linalg.svd`: it is the bottleneck (about 3 ms for 4096 blocks) and computes three triplets we
    throw away. U-plane blocks are positive (U >= 0), so by Perron-Frobenius the top singular vector is near the
    all-ones direction and s1/s0 is small (a chroma block is mostly its mean): 4 iterations from ones converge to
    float32 precision on such blocks (tested against the SVD). Returns s0 (N,), u0 (N, 4), v0 (N, 4).
    """
    gram = np.matmul(blocks.transpose(0, 2, 1), blocks)  # (N, 4, 4)
    side = blocks.shape[-1]
    v = np.full((blocks.shape[0], side, 1), side**-0.5, dtype=blocks.dtype)  # (N, b, 1), unit norm
    for _ in range(iters):
        v = np.matmul(gram, v)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    bv = np.matmul(blocks, v)[:, :, 0]  # (N, 4) = s0 * u0
    s0 = np.linalg.norm(bv, axis=1)  # (N,)
    u0 = bv / np.maximum(s0, 1e-12)[:, None]
    return s0, u0, v[:, :, 0]


def block_s0(u: np.ndarray, *, oy: int = 0, ox: int = 0, exact: bool = True, block: int = BLOCK) -> np.ndarray:
    """s0 of every block of the grid starting at pixel (oy, ox), (nby, nbx) float.

    exact=True uses the power iteration of `_top_singular` (agrees with the SVD to ~1e-3 on U-plane blocks).
    exact=False returns the Frobenius norm instead: it exceeds s0 by sum(s_i^2, i > 0) / (2 s0), well under one
    unit for chroma blocks (quantisation steps are ~50), and costs a tenth; the grid search uses it.
    """
    nby, nbx = grid_shape(u.shape[0], u.shape[1], oy, ox, block=block)
    if not exact:
        # OpenCV's area averaging: 2x2 means (LL / 2), then the b x b means of their squares; 3x faster than numpy.
        region = np.ascontiguousarray(u[oy : oy + nby * 2 * block, ox : ox + nbx * 2 * block], dtype=np.float32)
        half = cv2.resize(region, (nbx * block, nby * block), interpolation=cv2.INTER_AREA)  # (nby*b, nbx*b)
        mean_sq = cv2.resize(half * half, (nbx, nby), interpolation=cv2.INTER_AREA)  # (nby, nbx)
        return np.sqrt(mean_sq).reshape(nby, nbx) * (2 * block)  # ||LL block||_F = 2 b sqrt(mean(half^2))
    blocks = _to_blocks(_ll(u, oy, ox, nby, nbx, block), nby, nbx, block)  # (N, b, b)
    return _top_singular(blocks)[0].reshape(nby, nbx)


def frobenius_s0_all_offsets(u: np.ndarray, *, block: int = BLOCK) -> dict[tuple[int, int], np.ndarray]:
    """`block_s0(u, oy=oy, ox=ox, exact=False, block=block)` for every pixel offset of the grid at once.

    Shares the work: four Haar LL bands (one per pixel parity), squared once and 4x4-box-summed once (OpenCV);
    each offset is then a strided view of one of them.
    """
    height, width = u.shape
    out: dict[tuple[int, int], np.ndarray] = {}
    for py in (0, 1):
        for px in (0, 1):
            p = u[py : py + (height - py) // 2 * 2, px : px + (width - px) // 2 * 2]
            ll = (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) * 0.5
            # box[y, x] = sum of ll^2 over rows y..y+3, cols x..x+3 (anchor at the window's top-left).
            box = cv2.boxFilter(ll * ll, -1, (block, block), anchor=(0, 0), normalize=False,
                                borderType=cv2.BORDER_CONSTANT)  # fmt: skip
            for ly in range(block):
                for lx in range(block):
                    oy, ox = 2 * ly + py, 2 * lx + px
                    nby, nbx = grid_shape(height, width, oy, ox, block=block)
                    out[(oy, ox)] = np.sqrt(np.maximum(box[ly::block, lx::block][:nby, :nbx], 0.0))
    return out


def embed_block_bits(rgb: np.ndarray, bits: np.ndarray, *, scale: float, block: int = BLOCK) -> np.ndarray:
    """Return a marked copy of an (H, W, 3) uint8 RGB frame; `bits` (nby, nbx) 0/1 go to the grid at (0, 0).

    `bits` must have the shape `grid_shape(H, W)`; pixels right/below the last whole block are not touched.
    """
    height, width = rgb.shape[:2]
    nby, nbx = grid_shape(height, width, block=block)
    if bits.shape != (nby, nbx):
        raise ValueError(f"expected block bits of shape {(nby, nbx)}, got {bits.shape}")
    rows, cols = nby * 2 * block, nbx * 2 * block
    u = u_plane(rgb[:rows, :cols])  # (rows, cols)
    blocks = _to_blocks(_ll(u, 0, 0, nby, nbx, block), nby, nbx, block)  # (N, b, b)
    s0, u0, v0 = _top_singular(blocks)
    # Nearest lattice point of the wanted bit: (k + 0.25 + 0.5 * bit) * scale.
    offset = 0.25 + 0.5 * bits.reshape(-1).astype(np.float32)  # (N,)
    new_s0 = (np.rint(s0 / scale - offset) + offset) * scale
    # Only the top singular value changes: B' = B + (s0' - s0) u0 v0^T.
    delta = (new_s0 - s0)[:, None, None] * (u0[:, :, None] * v0[:, None, :])  # (N, b, b)
    # Inverse Haar with unchanged detail bands: every pixel of a 2x2 group moves by delta_LL / 2.
    d_ll = _from_blocks(delta * 0.5, nby, nbx)  # (rows/2, cols/2)
    d_u = cv2.resize(d_ll, (cols, rows), interpolation=cv2.INTER_NEAREST)  # (rows, cols)
    out = rgb.copy()
    region = out[:rows, :cols]
    # R is unchanged; G and B carry the U change (luma-neutral). Rounded and saturated by OpenCV.
    for channel in (1, 2):
        plane = np.ascontiguousarray(region[:, :, channel])
        region[:, :, channel] = cv2.add(plane, d_u * _RGB_PER_U[channel], dtype=cv2.CV_8U)
    return out


def packaged_block_bits(payload_bits: np.ndarray, height: int, width: int) -> np.ndarray:
    """The per-block bits the packaged encoder writes for `payload_bits`: block n (row-major) gets bit n % len."""
    nby, nbx = grid_shape(height, width)
    return np.resize(np.asarray(payload_bits, dtype=np.uint8), nby * nbx).reshape(nby, nbx)


def hard_bits(s0: np.ndarray, *, scale: float) -> np.ndarray:
    """The packaged decoder's hard read of each block: (s0 % scale) > scale / 2."""
    return ((s0 % scale) > scale * 0.5).astype(np.uint8)


def neutral_s0(block: int = BLOCK) -> float:
    """s0 of a grey (U = 128) block of `block`-sided LL: LL = 256 everywhere -> block * 256."""
    return 256.0 * block


def soft_bits(s0: np.ndarray, *, scale: float, gain: float | np.ndarray = 1.0, block: int = BLOCK) -> np.ndarray:
    """Soft read in [-1, 1] (positive = bit 1) of each block, undoing a chroma gain first.

    A brightness change multiplies R, G, B, hence U - 128, by `gain`; a mostly flat block's s0 then moves to
    NEUTRAL_S0 + gain * (s0 - NEUTRAL_S0), which the detector undoes for each gain it tries. -sin(2 pi s0/scale)
    is +1 on the bit-1 lattice (0.75), -1 on the bit-0 lattice (0.25), 0 half-way: a soft vote that voting over
    blocks and frames can add up.
    """
    neutral = neutral_s0(block)
    s0c = neutral + (s0 - neutral) / np.asarray(gain, dtype=s0.dtype)
    return -np.sin(s0c * np.asarray(2.0 * np.pi / scale, dtype=s0.dtype))
