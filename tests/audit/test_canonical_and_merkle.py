"""Canonical JSON, RFC 6962 hashing and entry hashing against data-file test vectors."""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from audit import CanonicalizationError, ChainBroken, ChainVerifier, MissingEntry, canonical_json
from audit.chain import compute_entry_hash
from audit.merkle import (
    frontier_append,
    frontier_root,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
)

VECTORS = Path(__file__).parent / "vectors"
JCS = json.loads((VECTORS / "canonical_rfc8785.json").read_text())
MERKLE = json.loads((VECTORS / "merkle_rfc6962.json").read_text())
CHAIN = json.loads((VECTORS / "entry_chain.json").read_text())


def _double(hex_bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(hex_bits))[0])


@pytest.mark.parametrize("case", JCS["objects"], ids=lambda c: c["name"])
def test_canonical_json_matches_rfc8785_objects(case: dict[str, Any]) -> None:
    assert canonical_json(json.loads(case["input"])) == case["canonical"].encode("utf-8")


@pytest.mark.parametrize("case", JCS["numbers"], ids=lambda c: c["ieee754"])
def test_canonical_numbers_match_ecmascript(case: dict[str, str]) -> None:
    assert canonical_json([_double(case["ieee754"])]) == f"[{case['canonical']}]".encode()


@pytest.mark.parametrize("case", JCS["rejected"], ids=lambda c: c["name"])
def test_non_ijson_values_are_refused(case: dict[str, str]) -> None:
    value = _double(case["ieee754"]) if "ieee754" in case else json.loads(case["input"])
    with pytest.raises(CanonicalizationError) as info:
        canonical_json({"v": value})
    assert info.value.code == case["code"]


@pytest.mark.parametrize("bad", [{1: "int key"}, {"when": object()}, {"b": b"bytes"}, {"s": {1, 2}}])
def test_non_json_types_are_refused_with_their_path(bad: dict[Any, Any]) -> None:
    with pytest.raises(CanonicalizationError, match=r"\$"):
        canonical_json(bad)


def test_random_floats_round_trip_through_canonical_form() -> None:
    rng = random.Random(6962)
    for _ in range(2000):
        x = struct.unpack(">d", rng.randbytes(8))[0]
        if x != x or x in (float("inf"), float("-inf")):
            continue
        assert float(json.loads(canonical_json(x))) == x  # JSON numbers are doubles


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert node_hash(a, b) != leaf_hash(a + b)


def test_merkle_roots_match_rfc6962_reference() -> None:
    leaves = [leaf_hash(bytes.fromhex(h)) for h in MERKLE["leaves_hex"]]
    for size, expected in enumerate(MERKLE["roots"]):
        assert merkle_root(leaves[:size]).hex() == expected, size


def test_frontier_is_the_same_tree_as_the_recursive_definition() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(70)]
    frontier: list[bytes] = []
    for size in range(len(leaves)):
        frontier = frontier_append(frontier, size, leaves[size])
        assert frontier_root(frontier) == _recursive_root(leaves[: size + 1])


@pytest.mark.parametrize("case", MERKLE["inclusion"], ids=lambda c: f"{c['index']}of{c['size']}")
def test_inclusion_proofs_match_reference(case: dict[str, Any]) -> None:
    leaves = [leaf_hash(bytes.fromhex(h)) for h in MERKLE["leaves_hex"]][: case["size"]]
    proof = inclusion_proof(leaves, case["index"])
    assert [p.hex() for p in proof] == case["proof"]
    root = root_from_inclusion_proof(leaves[case["index"]], case["index"], case["size"], proof)
    assert root.hex() == MERKLE["roots"][case["size"]]


def test_inclusion_proofs_reject_wrong_leaf_index_and_length() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(13)]
    root = merkle_root(leaves)
    for index in range(13):
        proof = inclusion_proof(leaves, index)
        assert root_from_inclusion_proof(leaves[index], index, 13, proof) == root
        assert root_from_inclusion_proof(leaves[(index + 1) % 13], index, 13, proof) != root
    with pytest.raises(ValueError):
        root_from_inclusion_proof(leaves[0], 0, 13, inclusion_proof(leaves, 0)[:-1])


@pytest.mark.parametrize("entry", CHAIN["entries"], ids=lambda e: str(e["fields"]["seq"]))
def test_entry_hash_vectors(entry: dict[str, Any]) -> None:
    canonical = canonical_json(entry["fields"])
    assert canonical == entry["canonical"].encode("utf-8")
    assert hashlib.sha256(b"\x00" + canonical).hexdigest() == entry["entry_hash"]
    assert compute_entry_hash(entry["fields"]) == entry["entry_hash"]


def test_vector_chain_verifies_and_has_the_pinned_root() -> None:
    chain = ChainVerifier()
    chain.feed_all({**e["fields"], "entry_hash": e["entry_hash"]} for e in CHAIN["entries"])
    assert chain.size == 3
    assert chain.root_hash == CHAIN["merkle_root"]


@pytest.mark.parametrize("case", CHAIN["tampered"], ids=lambda c: c["name"])
def test_tampered_vector_chains_name_the_entry(case: dict[str, Any]) -> None:
    records = [{**e["fields"], "entry_hash": e["entry_hash"]} for e in CHAIN["entries"]]
    target = next(r for r in records if r["seq"] == case["seq"])
    if case.get("delete"):
        records.remove(target)
    elif case.get("flip_bit"):
        value = bytearray(bytes.fromhex(target[case["field"]]))
        value[0] ^= 0x01
        target[case["field"]] = value.hex()
    else:
        target[case["field"]] = case["value"]
    expected = {"chain_broken": ChainBroken, "missing_entry": MissingEntry}[case["error"]]
    with pytest.raises(expected) as info:
        ChainVerifier().feed_all(records)
    assert info.value.code == case["error"]
    assert info.value.seq == case["error_seq"]


def _recursive_root(leaves: list[bytes]) -> bytes:
    # RFC 6962 section 2.1, written the way the RFC states it.
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_recursive_root(leaves[:k]), _recursive_root(leaves[k:]))
