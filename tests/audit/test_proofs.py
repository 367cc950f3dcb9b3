"""RFC 6962 consistency and inclusion proofs against transparency-dev's published vectors, an independent
straight-from-the-RFC reference implementation, and mutated (invalid) proofs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from audit.merkle import leaf_hash, node_hash, root_from_inclusion_proof
from audit.proofs import LeafTree, ProofError, verify_consistency

VECTORS = Path(__file__).parent / "vectors"
REFERENCE = json.loads((VECTORS / "merkle_rfc6962.json").read_text())
PROOFS = json.loads((VECTORS / "merkle_consistency_rfc6962.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in REFERENCE["leaves_hex"]]
TREE = LeafTree(LEAVES)


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH, recursively, as written in section 2.1."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


def _subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 6962 SUBPROOF(m, D[n], b), recursively, as written in section 2.1.2."""
    n = len(leaves)
    if m == n:
        return [] if complete else [_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*_subproof(m, leaves[:k], complete), _mth(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), _mth(leaves[:k])]


def test_prefix_roots_match_the_reference_tree_heads() -> None:
    assert [TREE.root(n).hex() for n in range(len(LEAVES) + 1)] == REFERENCE["roots"]


@pytest.mark.parametrize("case", PROOFS["consistency"], ids=lambda c: f"{c['size1']}-{c['size2']}")
def test_consistency_proofs_match_published_vectors(case: dict[str, Any]) -> None:
    size1, size2 = case["size1"], case["size2"]
    proof = TREE.consistency_proof(size1, size2)
    assert [h.hex() for h in proof] == case["proof"]
    verify_consistency(size1, TREE.root(size1), size2, TREE.root(size2), [bytes.fromhex(h) for h in case["proof"]])


@pytest.mark.parametrize("case", PROOFS["inclusion"], ids=lambda c: f"{c['index']}-{c['size']}")
def test_inclusion_proofs_match_published_vectors(case: dict[str, Any]) -> None:
    proof = TREE.inclusion_proof(case["index"], case["size"])
    assert [h.hex() for h in proof] == case["proof"]
    assert root_from_inclusion_proof(LEAVES[case["index"]], case["index"], case["size"], proof) == TREE.root(
        case["size"]
    )


def test_every_proof_up_to_40_leaves_matches_the_recursive_definition_and_verifies() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    tree = LeafTree(leaves)
    for n in range(1, 41):
        assert tree.root(n) == _mth(leaves[:n])
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            assert proof == _subproof(m, leaves[:n], True), (m, n)
            verify_consistency(m, tree.root(m), n, tree.root(n), proof)
        for i in range(n):
            assert root_from_inclusion_proof(leaves[i], i, n, tree.inclusion_proof(i, n)) == tree.root(n)


def _mutations(size1: int, size2: int, proof: list[bytes]) -> list[tuple[str, int, int, list[bytes]]]:
    flipped = [
        (f"bit flipped in element {i}", size1, size2, [*proof[:i], bytes([h[0] ^ 1]) + h[1:], *proof[i + 1 :]])
        for i, h in enumerate(proof)
    ]
    return [
        *flipped,
        ("last element dropped", size1, size2, proof[:-1]),
        ("element appended", size1, size2, [*proof, proof[-1]]),
        ("element prepended", size1, size2, [proof[0], *proof]),
        ("elements reversed", size1, size2, proof[::-1]) if len(proof) > 1 else ("empty", size1, size2, []),
        ("size1 + 1", size1 + 1, size2, proof),
        ("size1 - 1", size1 - 1, size2, proof),
        ("size2 + 1", size1, size2 + 1, proof),
        ("size2 - 1", size1, size2 - 1, proof) if size2 - 1 > size1 else ("empty", size1, size2, []),
    ]


@pytest.mark.parametrize(("size1", "size2"), [(1, 8), (2, 5), (6, 8), (3, 7), (4, 8), (5, 13), (7, 8), (1, 2)])
def test_mutated_consistency_proofs_fail(size1: int, size2: int) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(16)]
    tree = LeafTree(leaves)
    proof = tree.consistency_proof(size1, size2)
    verify_consistency(size1, tree.root(size1), size2, tree.root(size2), proof)
    for name, m, n, bad in _mutations(size1, size2, proof):
        with pytest.raises(ProofError):
            verify_consistency(m, tree.root(m) if m <= 16 else tree.root(), n, tree.root(n), bad)
            pytest.fail(f"{name} verified")
    with pytest.raises(ProofError, match="root of the tree of"):
        verify_consistency(size1, tree.root(size1), size2, tree.root(size2 + 1), proof)  # a forked newer head
    with pytest.raises(ProofError, match="root of the tree of"):
        verify_consistency(size1, leaf_hash(b"forged"), size2, tree.root(size2), proof)  # a forged older head


def test_edge_cases_of_consistency() -> None:
    root = TREE.root(4)
    verify_consistency(4, root, 4, root, [])
    verify_consistency(0, TREE.root(0), 8, TREE.root(8), [])  # the empty tree is a prefix of every tree
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(4, root, 4, TREE.root(5)[::-1], [])
    with pytest.raises(ProofError, match="empty consistency proof"):
        verify_consistency(4, root, 4, root, [root])
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(3, TREE.root(3), 5, TREE.root(5), [])
    with pytest.raises(ProofError, match="between 0 and"):
        verify_consistency(5, TREE.root(5), 3, TREE.root(3), [])
    with pytest.raises(ProofError, match="32-byte"):
        verify_consistency(3, TREE.root(3), 5, TREE.root(5), [b"short"])
    with pytest.raises(ProofError):
        TREE.consistency_proof(3, 9)
    with pytest.raises(ProofError):
        TREE.inclusion_proof(8, 8)
