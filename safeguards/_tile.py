"""Where each codeword bit lives: a 10 x 12-block tile repeated over the frame's block grid.

Why a 2-D periodic tile: a crop removes whole tiles plus a partial one, so the bits keep their positions modulo the
tile. The detector finds the grid's pixel offset (0..7 on each axis) and then tries all 120 tile phases; the BCH
code and the keyed check tell the right phase from the others. Inside the tile the 120 codeword bits are permuted
(neighbouring blocks carry unrelated bits, so a damaged region spreads its errors over the code) and XORed with a
fixed whitening sequence (flat or periodic content does not look like an all-zero codeword). Both come from
SHA-256 of fixed labels, so they never depend on a random generator's version.
"""

from __future__ import annotations

import hashlib

import numpy as np

from safeguards._ecc import CODE_BITS

TILE_ROWS, TILE_COLS = 10, 12
CELLS = TILE_ROWS * TILE_COLS
assert CELLS == CODE_BITS


def _hash_bytes(label: bytes, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(label + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:n]


# cell c (row-major in the tile) carries codeword bit PERM[c].
PERM = np.argsort(np.frombuffer(_hash_bytes(b"provatar-wm-v2/perm", 4 * CELLS), dtype=">u4"), kind="stable")
WHITEN = np.unpackbits(np.frombuffer(_hash_bytes(b"provatar-wm-v2/whiten", CELLS // 8), dtype=np.uint8))


def tile_bits(codeword: np.ndarray) -> np.ndarray:
    """(120,) codeword bits -> (10, 12) tile of bits to embed (permuted and whitened)."""
    return (np.asarray(codeword, dtype=np.uint8)[PERM] ^ WHITEN[PERM]).reshape(TILE_ROWS, TILE_COLS)


def grid_bits(tile: np.ndarray, nby: int, nbx: int) -> np.ndarray:
    """Repeat the tile over an (nby, nbx) block grid starting at tile phase (0, 0)."""
    reps = (-(-nby // TILE_ROWS), -(-nbx // TILE_COLS))
    return np.tile(tile, reps)[:nby, :nbx]


def cell_of_block(nby: int, nbx: int) -> np.ndarray:
    """Tile cell (row-major) of every block of an (nby, nbx) grid read from its own origin, (nby * nbx,)."""
    rows = np.arange(nby) % TILE_ROWS
    cols = np.arange(nbx) % TILE_COLS
    return (rows[:, None] * TILE_COLS + cols[None, :]).reshape(-1)


def cell_sums(votes: np.ndarray) -> np.ndarray:
    """Per-block votes (..., nby, nbx) read from the grid's own origin -> sums per tile cell, (..., 120).

    Pads the grid with zero votes to whole tiles and sums the tiles: one reshape instead of a scatter per array.
    """
    nby, nbx = votes.shape[-2:]
    pad_y, pad_x = -nby % TILE_ROWS, -nbx % TILE_COLS
    padded = np.pad(votes, [(0, 0)] * (votes.ndim - 2) + [(0, pad_y), (0, pad_x)])
    lead = votes.shape[:-2]
    tiles = padded.reshape(*lead, (nby + pad_y) // TILE_ROWS, TILE_ROWS, (nbx + pad_x) // TILE_COLS, TILE_COLS)
    return tiles.sum(axis=(-4, -2)).reshape(*lead, CELLS)


def codeword_soft(cells: np.ndarray, phase_y: int, phase_x: int) -> np.ndarray:
    """Soft votes per tile cell, (..., 120) in the reader's cell order -> soft votes per codeword bit, (..., 120).

    `phase` is where the reader's grid origin sits in the embedder's tile: the reader's cell (cy, cx) is the
    embedder's cell ((cy + phase_y) % 10, (cx + phase_x) % 12). Whitened bits have their sign flipped back.
    """
    grid = cells.reshape(*cells.shape[:-1], TILE_ROWS, TILE_COLS)
    embedder = np.roll(grid, (phase_y, phase_x), axis=(-2, -1)).reshape(cells.shape)  # embedder's cell order
    soft = np.empty_like(embedder)
    soft[..., PERM] = embedder
    return np.where(WHITEN == 1, -soft, soft)


def _phase_table() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(120 phases, 120 bits) index of the reader cell holding codeword bit k at each phase."""
    home = np.empty(CELLS, dtype=np.int64)
    home[PERM] = np.arange(CELLS)  # embedder cell of codeword bit k
    ey, ex = home // TILE_COLS, home % TILE_COLS
    phases = [(py, px) for py in range(TILE_ROWS) for px in range(TILE_COLS)]
    table = np.stack([((ey - py) % TILE_ROWS) * TILE_COLS + (ex - px) % TILE_COLS for py, px in phases])
    return table, phases


PHASE_TABLE, PHASES = _phase_table()
_SIGN = np.where(WHITEN == 1, -1.0, 1.0)


def codeword_soft_all_phases(cells: np.ndarray) -> np.ndarray:
    """`codeword_soft(cells, *PHASES[i])` for every phase i at once: (..., 120) -> (..., 120 phases, 120 bits)."""
    return cells[..., PHASE_TABLE] * _SIGN
