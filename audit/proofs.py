"""RFC 6962 consistency and inclusion proofs: generated from the leaf hashes, verified from tree heads alone.

A consistency proof shows that the tree of `size2` leaves extends the tree of `size1` leaves (nothing in the
first `size1` was changed, removed or reordered) without the verifier holding any leaf: it is what lets someone
who kept an older signed checkpoint check a newer one. Generation is RFC 6962 section 2.1.2 (PROOF / SUBPROOF);
verification is RFC 9162 section 2.1.4.2, step by step, so that a proof made by any RFC 6962 implementation
(Certificate Transparency, Trillian, Rekor) checks here and the other way round.

`LeafTree` keeps every level of the perfect subtrees (2n hashes for n leaves), so that the root of any prefix
and every proof costs O(log^2 n) node hashes: a bundle holds one proof per consecutive pair of checkpoints, and
recomputing each from the leaves would be quadratic.
"""

from __future__ import annotations

from collections.abc import Sequence

from audit.merkle import EMPTY_ROOT, node_hash


class ProofError(ValueError):
    """A proof does not verify, or was asked for sizes it cannot exist for. `str()` says which step failed."""


class LeafTree:
    """The Merkle tree over a fixed list of leaf hashes; roots and proofs for any prefix of it."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        # levels[h][i] = root of the perfect subtree of leaves [i * 2**h, (i + 1) * 2**h)
        self._levels: list[list[bytes]] = [list(leaves)]
        while len(self._levels[-1]) > 1:
            below = self._levels[-1]
            self._levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (all of them by default)."""
        size = self.size if size is None else size
        self._check_size(size)
        return self._range_root(0, size) if size else EMPTY_ROOT

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """PROOF(size1, D[size2]) of RFC 6962 section 2.1.2 (empty when size1 is 0 or equals size2)."""
        self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise ProofError(f"a consistency proof needs 0 <= size1 <= size2, got {size1} and {size2}")
        if size1 == 0 or size1 == size2:
            return []
        return self._subproof(size1, 0, size2, True)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 6962 section 2.1.1, leaf first."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._range_root(start + k, end))
                end = start + k
            else:
                path.append(self._range_root(start, start + k))
                start += k
        return path[::-1]

    def _subproof(self, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        # SUBPROOF(m, D[start:end], b); iterative would be shorter-lived, but the recursion depth is only log2(n).
        n = end - start
        if m == n:
            return [] if complete else [self._range_root(start, end)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, complete), self._range_root(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self._range_root(start, start + k)]

    def _range_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for the ranges the RFC recursion visits: `start` is a multiple of the largest power of
        two below `end - start`, so the range splits into perfect subtrees found in the level table."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._range_root(start, start + k), self._range_root(start + k, end))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError(f"tree size {size} is outside 0..{self.size}")


def verify_consistency(size1: int, root1: bytes, size2: int, root2: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless `proof` shows the tree (size2, root2) extends the tree (size1, root1).

    RFC 9162 section 2.1.4.2, with transparency-dev's handling of the edge cases: equal sizes need equal roots and
    an empty proof; the empty tree is consistent with any tree, by an empty proof.
    """
    if not 0 <= size1 <= size2:
        raise ProofError(f"size1 ({size1}) must be between 0 and size2 ({size2})")
    if any(len(h) != 32 for h in proof):
        raise ProofError("every proof element must be a 32-byte SHA-256 hash")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise ProofError(f"two trees of {size1} leaves have different roots")
        return
    if size1 == 0:
        if proof:
            raise ProofError("the empty tree needs an empty consistency proof")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # step 2: the old tree is a perfect subtree of the new one; its root starts the path
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:  # step 3
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 4
    for c in path[1:]:  # step 5
        if sn == 0:
            raise ProofError("the consistency proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the trees are deep")
    if fr != root1:
        raise ProofError(f"the proof does not lead to the root of the tree of {size1} leaves")
    if sr != root2:
        raise ProofError(f"the proof does not lead to the root of the tree of {size2} leaves")


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)
