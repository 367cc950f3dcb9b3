"""RFC 6962 hashing: domain-separated leaf/node hashes and an incremental Merkle tree head.

Leaf hashes are SHA-256(0x00 || data) and interior nodes SHA-256(0x01 || left || right), so a leaf can never
be passed off as a node (second-preimage resistance). The tree is kept as a *frontier*: the roots of the
perfect subtrees that make up the first n leaves (one per set bit of n, largest first). Appending is O(log n)
and the tree head is the right fold of the frontier, which equals RFC 6962's MTH with its largest-power-of-two
split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash of `data`."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def frontier_append(frontier: Sequence[bytes], size: int, leaf: bytes) -> list[bytes]:
    """Return the frontier of `size + 1` leaves from the frontier of `size` leaves and the new leaf hash.

    Like a binary counter: the new leaf merges with the rightmost subtree roots while the low bits of `size`
    are 1.
    """
    if len(frontier) != bin(size).count("1"):
        raise ValueError(
            f"frontier has {len(frontier)} roots but a tree of {size} leaves needs {size.bit_count()}"
        )
    out = list(frontier)
    node = leaf
    n = size
    while n & 1:
        node = node_hash(out.pop(), node)
        n >>= 1
    out.append(node)
    return out


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """Tree head (MTH) of the leaves summarised by `frontier`."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = node_hash(left, root)
    return root


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """MTH over already-hashed leaves (streams; memory O(log n))."""
    frontier: list[bytes] = []
    size = 0
    for leaf in leaves:
        frontier = frontier_append(frontier, size, leaf)
        size += 1
    return frontier_root(frontier)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 audit path (PATH(m, D[n])) for leaf `index` among `leaves` (leaf hashes)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} outside a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(leaves[:k], index), merkle_root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), merkle_root(leaves[:k])]


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Recompute the tree head from a leaf hash and its audit path (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} outside a tree of size {size}")
    fn, sn = index, size - 1
    node = leaf
    for sibling in proof:
        if sn == 0:
            raise ValueError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof is shorter than the tree is deep")
    return node


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)
