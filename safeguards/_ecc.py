"""BCH(120, 64, t=8) over the watermark payload: corrects any 8 wrong bits of a 120-bit codeword.

The code is the binary BCH code of length 127 over GF(2^7) with designed distance 17 (56 parity bits), shortened
to 64 data bits; encoding and decoding are the Linux kernel's BCH library through `bchlib`.

Why the re-encode check in `decode`: bchlib reports success for some words it cannot actually correct (error
locations it finds in the shortened part); re-encoding the corrected data and comparing the parity keeps only true
codewords within distance 8, so the chance that a random 120-bit word "decodes" is the textbook
sum_{i<=8} C(127, i) / 2^56 (about 2^-15.7; `RANDOM_DECODE_BOUND`).
"""

from __future__ import annotations

import math

import bchlib
import numpy as np

DATA_BITS = 64
PARITY_BITS = 56
CODE_BITS = DATA_BITS + PARITY_BITS  # 120
T = 8  # correctable bit errors
_M = 7  # GF(2^7): full length 127
# Probability that a uniformly random 120-bit word lies within distance T of some codeword (union bound over
# the full-length code's decoding spheres): the ECC's share of the false-positive bound.
RANDOM_DECODE_BOUND = sum(math.comb(2**_M - 1, i) for i in range(T + 1)) / 2.0**PARITY_BITS


class Bch:
    """Encoder/decoder. Not thread-safe (bchlib keeps decoder state): one instance per thread or per call."""

    def __init__(self) -> None:
        self._bch = bchlib.BCH(T, m=_M)
        if self._bch.ecc_bits != PARITY_BITS:  # a different bchlib default polynomial would change the code
            raise RuntimeError(f"bchlib gave {self._bch.ecc_bits} parity bits, expected {PARITY_BITS}")

    def encode(self, data: bytes) -> np.ndarray:
        """8 data bytes -> (120,) uint8 codeword bits: data bits first (MSB first), then parity."""
        if len(data) != DATA_BITS // 8:
            raise ValueError(f"expected {DATA_BITS // 8} data bytes, got {len(data)}")
        ecc = bytes(self._bch.encode(bytes(data)))
        return np.unpackbits(np.frombuffer(bytes(data) + ecc, dtype=np.uint8))

    def decode(self, bits: np.ndarray) -> tuple[bytes, int] | None:
        """Hard (120,) 0/1 word -> (8 corrected data bytes, bits corrected), or None beyond 8 errors."""
        raw = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()
        data, ecc = bytearray(raw[: DATA_BITS // 8]), bytearray(raw[DATA_BITS // 8 :])
        nerr = self._bch.decode(data, ecc)
        if nerr < 0:
            return None
        if nerr:
            self._bch.correct(data, ecc)
        if bytes(self._bch.encode(bytes(data))) != bytes(ecc):
            return None
        return bytes(data), int(nerr)
