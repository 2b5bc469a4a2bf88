"""RFC 9162 §2.1 Merkle tree: published Certificate Transparency vectors, tampering, properties."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def _h(hexes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# --- Published vectors -------------------------------------------------------------------------
# Leaves, roots, node hashes and compact ranges: transparency-dev/merkle testonly/constants.go
# (LeafInputs, RootHashes, NodeHashes, CompactTrees). The same leaves and roots are kInputs and
# kSHA256Roots in google/certificate-transparency cpp/merkletree/merkle_tree_test.cc.
LEAF_INPUTS = _h(
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
)
ROOTS = _h(
    [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # size 0
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",  # size 8
    ]
)
# NODE_HASHES[level][i] = MTH of leaves [i * 2**level, (i + 1) * 2**level).
NODE_HASHES = [
    _h(
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ]
    ),
    _h(
        [
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ]
    ),
    _h(
        [
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
    ),
    _h(["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]),
]
_NH = NODE_HASHES
# constants.go CompactTrees(): the frontier after each size.
COMPACT_NODES: list[list[bytes]] = [
    [],
    [_NH[0][0]],
    [_NH[1][0]],
    [_NH[1][0], _NH[0][2]],
    [_NH[2][0]],
    [_NH[2][0], _NH[0][4]],
    [_NH[2][0], _NH[1][2]],
    [_NH[2][0], _NH[1][2], _NH[0][6]],
    [_NH[3][0]],
]

# transparency-dev/merkle proof/verify_test.go inclusionProofs (= kSHA256Paths in merkle_tree_test.cc).
# The sources number leaves from 1; converted here to our 0-based index.
INCLUSION_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (0, 1, []),
    (
        0,
        8,
        _h(
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        ),
    ),
    (
        5,
        8,
        _h(
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
    (2, 3, _h(["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"])),
    (
        1,
        5,
        _h(
            [
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        ),
    ),
]

# transparency-dev/merkle proof/verify_test.go consistencyProofs (the first four are also
# kSHA256Proofs in merkle_tree_test.cc and sha256_proofs in python/ct/crypto/merkle_test.py).
CONSISTENCY_PROOFS: list[tuple[int, int, list[bytes]]] = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ]
        ),
    ),
    (
        6,
        8,
        _h(
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
    (
        2,
        5,
        _h(
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ]
        ),
    ),
    (
        6,
        7,
        _h(
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ]
        ),
    ),
]

# google/certificate-transparency python/ct/crypto/merkle_test.py (TreeHasherTest).
LEAF_HASH_VECTORS = [
    ("", "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    (
        "101112131415161718191a1b1c1d1e1f",
        "3bfb960453ebaebf33727da7a1f4db38acc051d381b6da20d6d4e88f0eabfd7a",
    ),
]
NODE_HASH_VECTOR = (
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    "1a378704c17da31e2d05b6d121c2bb2c7d76f6ee6fa8f983e596c2d034963c57",
)

# A proof from a production CT log, google/certificate-transparency python/ct/crypto/merkle_test.py
# (MerkleVerifierTest: leaf_hash, leaf_index, tree_size, sha256_audit_path, expected_root_hash).
CT_LOG_LEAF_HASH = bytes.fromhex("7a395c866d5ecdb0cccb623e011dbc392cd348d1d1d72776174e127a24b09c78")
CT_LOG_INDEX = 848049
CT_LOG_TREE_SIZE = 3630887
CT_LOG_ROOT = bytes.fromhex("78316a05c9bcf14a3a4548f5b854a9adfcd46a4c034401b3ce7eb7ac2f1d0ecb")
CT_LOG_PATH = _h(
    [
        "1a208aeebcd1b39fe2de247ee8db9454e1e93a312d206b87f6ca9cc6ec6f1ddd",
        "0a1b78b383f580856f433c01a5741e160d451c185910027f6cc9f828687a40c4",
        "3d1745789bc63f2da15850de1c12a5bf46ed81e1cc90f086148b1662e79aab3d",
        "9095b61e14d8990acf390905621e62b1714fb8e399fbb71de5510e0aef45affe",
        "0a332b91b8fab564e6afd1dd452449e04619b18accc0ff9aa8393cd4928451f2",
        "2336f0181d264aed6d8f3a6507ca14a8d3b3c3a23791ac263e845d208c1ee330",
        "b4ce56e300590500360c146c6452edbede25d4ed83919278749ee5dbe178e048",
        "933f6ddc848ea562e4f9c5cfb5f176941301dad0c6fdb9d1fbbe34fac1be6966",
        "b95a6222958a86f74c030be27c44f57dbe313e5e7c7f4ffb98bcbd3a03bb52f2",
        "daeeb3ce5923defd0faeb8e0c210b753b85b809445d7d3d3cd537a9aabaa9c45",
        "7fadd0a13e9138a2aa6c3fdec4e2275af233b94812784f66bcca9aa8e989f2bc",
        "1864e6ba3e32878610546539734fb5eeae2529991f130c575c73a7e25a2a7c56",
        "12842d1202b1dc6828a17ab253c02e7ce9409b5192430feba44189f39cc02d66",
        "29af64b16fa3053c13d02ac63aa75b23aa468506e44c3a2315edc85d2dc22b11",
        "b527b99934a0bd9edd154e449b0502e2c499bba783f3bc3dfe23364b6b532009",
        "4584db8ae8e351ace08e01f306378a92bfd43611714814f3d834a2842d69faa8",
        "86a9a41573b0d6e4292f01e93243d6cc65b30f06606fc6fa57390e7e90ed580f",
        "a88b98fbe84d4c6aae8db9d1605dfac059d9f03fe0fcb0d5dff1295dacba09e6",
        "06326dc617a6d1f7021dc536026dbfd5fffc6f7c5531d48ef6ccd1ed1569f2a1",
        "f41fe8fdc3a2e4e8345e30216e7ebecffee26ff266eeced208a6c2a3cf08f960",
        "40cf5bde8abb76983f3e98ba97aa36240402975674e120f234b3448911090f8d",
        "b3222dc8658538079883d980d7fdc2bef9285344ea34338968f736b04aeb387a",
    ]
)

LEAF_HASHES = [leaf_hash(d) for d in LEAF_INPUTS]
# Arbitrary well-formed hash that is not a node of the test tree (verify_test.go sha256SomeHash).
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(data: bytes, pos: int) -> bytes:
    """Flip the lowest bit of byte ``pos``."""
    return data[:pos] + bytes([data[pos] ^ 1]) + data[pos + 1 :]


def _replace(proof: list[bytes], i: int, value: bytes) -> list[bytes]:
    return [*proof[:i], value, *proof[i + 1 :]]


# --- Independent reference: RFC 9162 §2.1 definitions transcribed literally (recursive, list slices).
def _ref_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _ref_mth(hs: Sequence[bytes]) -> bytes:
    if not hs:
        return hashlib.sha256(b"").digest()
    if len(hs) == 1:
        return hs[0]
    k = _ref_k(len(hs))
    return _ref_node(_ref_mth(hs[:k]), _ref_mth(hs[k:]))


def _ref_path(m: int, hs: Sequence[bytes]) -> list[bytes]:
    if len(hs) == 1:
        return []
    k = _ref_k(len(hs))
    if m < k:
        return [*_ref_path(m, hs[:k]), _ref_mth(hs[k:])]
    return [*_ref_path(m - k, hs[k:]), _ref_mth(hs[:k])]


def _ref_subproof(m: int, hs: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(hs)
    if m == n:
        return [] if b else [_ref_mth(hs)]
    k = _ref_k(n)
    if m <= k:
        return [*_ref_subproof(m, hs[:k], b), _ref_mth(hs[k:])]
    return [*_ref_subproof(m - k, hs[k:], False), _ref_mth(hs[:k])]


# --- Hash primitives ---------------------------------------------------------------------------
def test_empty_tree_hash_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == ROOTS[0]
    assert CompactRange().root() == ROOTS[0]


@pytest.mark.parametrize(("data_hex", "expected"), LEAF_HASH_VECTORS)
def test_leaf_hash_vectors(data_hex: str, expected: str) -> None:
    assert leaf_hash(bytes.fromhex(data_hex)).hex() == expected


def test_node_hash_vector() -> None:
    left, right, expected = NODE_HASH_VECTOR
    assert node_hash(bytes.fromhex(left), bytes.fromhex(right)).hex() == expected


def test_domain_separation() -> None:
    # A leaf whose data is the concatenation of two hashes must not collide with their parent.
    left, right = LEAF_HASHES[0], LEAF_HASHES[1]
    assert leaf_hash(left + right) == hashlib.sha256(b"\x00" + left + right).digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert leaf_hash(left + right) != node_hash(left, right)


# --- Roots and compact ranges ------------------------------------------------------------------
def test_leaf_hashes_of_inputs_match_published_level_zero() -> None:
    assert [leaf_hash(d) for d in LEAF_INPUTS] == NODE_HASHES[0]


@pytest.mark.parametrize("level", range(4))
def test_perfect_subtree_hashes_match_published(level: int) -> None:
    width = 1 << level
    got = [root_hash(LEAF_HASHES[i * width : (i + 1) * width]) for i in range(8 // width)]
    assert got == NODE_HASHES[level]


@pytest.mark.parametrize("size", range(9))
def test_root_hash_vectors(size: int) -> None:
    assert root_hash(LEAF_HASHES[:size]) == ROOTS[size]


def test_compact_range_matches_published_roots_and_frontiers_at_every_size() -> None:
    cr = CompactRange()
    assert (cr.size, cr.nodes, cr.root()) == (0, [], ROOTS[0])
    for size in range(1, 9):
        cr.append(LEAF_HASHES[size - 1])
        assert cr.size == size
        assert cr.nodes == COMPACT_NODES[size]
        assert cr.root() == ROOTS[size]


@pytest.mark.parametrize("size", range(9))
def test_compact_range_restored_from_published_frontier(size: int) -> None:
    cr = CompactRange(size, COMPACT_NODES[size])
    assert cr.root() == ROOTS[size]
    for next_size in range(size + 1, 9):
        cr.append(LEAF_HASHES[next_size - 1])
        assert cr.nodes == COMPACT_NODES[next_size]
        assert cr.root() == ROOTS[next_size]


def test_compact_range_nodes_is_a_copy() -> None:
    cr = CompactRange(3, COMPACT_NODES[3])
    cr.nodes.append(SOME_HASH)
    cr.nodes.clear()
    assert cr.nodes == COMPACT_NODES[3]
    assert cr.root() == ROOTS[3]


def test_compact_range_repr() -> None:
    assert repr(CompactRange(1, COMPACT_NODES[1])) == (
        "CompactRange(size=1, nodes=[6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d])"
    )


# --- Inclusion proofs --------------------------------------------------------------------------
def _vector_id(vector: tuple[int, int, list[bytes]]) -> str:
    return f"{vector[0]}-{vector[1]}"


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS, ids=map(_vector_id, INCLUSION_PROOFS))
def test_published_inclusion_proof_is_generated_and_verifies(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(LEAF_HASHES[:size], index) == proof
    assert verify_inclusion(LEAF_HASHES[index], index, size, proof, ROOTS[size]) is True


def _inclusion_tampers(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> list[tuple[str, bytes, int, int, list[bytes], bytes]]:
    t: list[tuple[str, bytes, int, int, list[bytes], bytes]] = [
        ("index + 1", leaf, index + 1, size, proof, root),
        ("index ^ 2", leaf, index ^ 2, size, proof, root),
        ("size * 2", leaf, index, size * 2, proof, root),
        ("size // 2", leaf, index, size // 2, proof, root),
        ("wrong leaf", leaf_hash(b"WrongLeaf"), index, size, proof, root),
        ("short leaf", leaf[:31], index, size, proof, root),
        ("empty-tree root", leaf, index, size, proof, EMPTY_ROOT),
        ("unrelated root", leaf, index, size, proof, SOME_HASH),
        ("flipped root", leaf, index, size, proof, _flip(root, 31)),
        ("trailing empty element", leaf, index, size, [*proof, b""], root),
        ("trailing root", leaf, index, size, [*proof, root], root),
        ("trailing hash", leaf, index, size, [*proof, SOME_HASH], root),
        # Only the RFC's "sn is 0" check inside the loop rejects this one.
        ("trailing hash, root extended", leaf, index, size, [*proof, SOME_HASH], node_hash(SOME_HASH, root)),
        ("preceding empty element", leaf, index, size, [b"", *proof], root),
        ("preceding root", leaf, index, size, [root, *proof], root),
    ]
    if index > 0:
        t.append(("index - 1", leaf, index - 1, size, proof, root))
    if proof:
        t.append(("truncated", leaf, index, size, proof[:-1], root))
        t.append(("last element duplicated", leaf, index, size, [*proof, proof[-1]], root))
    if len(proof) > 1:
        t.append(("inserted element", leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
        t.append(("elements swapped", leaf, index, size, [proof[1], proof[0], *proof[2:]], root))
    for i, element in enumerate(proof):
        for pos in range(len(element)):
            t.append(
                (
                    f"proof[{i}] byte {pos} flipped",
                    leaf,
                    index,
                    size,
                    _replace(proof, i, _flip(element, pos)),
                    root,
                )
            )
    return t


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS, ids=map(_vector_id, INCLUSION_PROOFS))
def test_tampered_published_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    tampers = _inclusion_tampers(LEAF_HASHES[index], index, size, proof, ROOTS[size])
    assert len(tampers) == 15 + (index > 0) + 2 * (len(proof) > 0) + 2 * (len(proof) > 1) + 32 * len(proof)
    accepted = [desc for desc, leaf, i, n, p, root in tampers if verify_inclusion(leaf, i, n, p, root)]
    assert accepted == []


def test_every_other_index_in_the_published_tree_fails() -> None:
    for index, size, proof in INCLUSION_PROOFS:
        for other in range(size + 2):
            expected = other == index
            assert verify_inclusion(LEAF_HASHES[index], other, size, proof, ROOTS[size]) is expected, (
                index,
                other,
            )


def test_inclusion_tree_size_is_authenticated_only_through_the_root() -> None:
    # Leaf 0 sits at the same place in trees of size 5..8, so with the size-8 root and path the
    # computation is identical: callers must take tree_size and root from one signed checkpoint.
    proof = INCLUSION_PROOFS[1][2]
    results = {size: verify_inclusion(LEAF_HASHES[0], 0, size, proof, ROOTS[8]) for size in range(1, 17)}
    assert results == {size: 5 <= size <= 8 for size in range(1, 17)}


def test_inclusion_proof_from_a_production_ct_log_verifies() -> None:
    assert verify_inclusion(CT_LOG_LEAF_HASH, CT_LOG_INDEX, CT_LOG_TREE_SIZE, CT_LOG_PATH, CT_LOG_ROOT) is True
    tampers = {
        "index + 1": (CT_LOG_LEAF_HASH, CT_LOG_INDEX + 1, CT_LOG_TREE_SIZE, CT_LOG_PATH, CT_LOG_ROOT),
        "size * 2": (CT_LOG_LEAF_HASH, CT_LOG_INDEX, CT_LOG_TREE_SIZE * 2, CT_LOG_PATH, CT_LOG_ROOT),
        "root flipped": (
            CT_LOG_LEAF_HASH,
            CT_LOG_INDEX,
            CT_LOG_TREE_SIZE,
            CT_LOG_PATH,
            _flip(CT_LOG_ROOT, 0),
        ),
        "truncated": (CT_LOG_LEAF_HASH, CT_LOG_INDEX, CT_LOG_TREE_SIZE, CT_LOG_PATH[:-1], CT_LOG_ROOT),
        "path[10] flipped": (
            CT_LOG_LEAF_HASH,
            CT_LOG_INDEX,
            CT_LOG_TREE_SIZE,
            _replace(CT_LOG_PATH, 10, _flip(CT_LOG_PATH[10], 5)),
            CT_LOG_ROOT,
        ),
    }
    assert {desc: verify_inclusion(*args) for desc, args in tampers.items()} == dict.fromkeys(tampers, False)


@pytest.mark.parametrize(
    ("leaf", "index", "size", "proof", "root", "expected"),
    [
        pytest.param(LEAF_HASHES[0], 0, 1, [], ROOTS[1], True, id="single leaf is its own root"),
        pytest.param(LEAF_HASHES[1], 0, 1, [], ROOTS[1], False, id="single leaf mismatch"),
        pytest.param(LEAF_HASHES[0], 0, 1, [LEAF_HASHES[0]], ROOTS[1], False, id="single leaf extra element"),
        pytest.param(LEAF_HASHES[0], 0, 0, [], ROOTS[0], False, id="empty tree has no leaves"),
        pytest.param(LEAF_HASHES[0], 1, 1, [], LEAF_HASHES[0], False, id="index == size"),
        pytest.param(b"", 0, 1, [], b"", False, id="empty hashes"),
        pytest.param(LEAF_HASHES[0] + b"\x00", 0, 1, [], ROOTS[1] + b"\x00", False, id="33-byte hashes"),
    ],
)
def test_inclusion_edge_cases(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes, expected: bool
) -> None:
    assert verify_inclusion(leaf, index, size, proof, root) is expected


# --- Consistency proofs ------------------------------------------------------------------------
@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_PROOFS, ids=map(_vector_id, CONSISTENCY_PROOFS))
def test_published_consistency_proof_is_generated_and_verifies(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(LEAF_HASHES[:new], old) == proof
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof) is True


def _consistency_tampers(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    t: list[tuple[str, int, int, bytes, bytes, list[bytes]]] = [
        ("old - 1", old - 1, new, r1, r2, proof),
        ("old + 1", old + 1, new, r1, r2, proof),
        ("old ^ 2", old ^ 2, new, r1, r2, proof),
        ("new * 2", old, new * 2, r1, r2, proof),
        ("new // 2", old, new // 2, r1, r2, proof),
        ("old root flipped", old, new, _flip(r1, 0), r2, proof),
        ("new root flipped", old, new, r1, _flip(r2, 0), proof),
        ("old root short", old, new, b"WrongRoot", r2, proof),
        ("new root short", old, new, r1, b"WrongRoot", proof),
        ("swapped roots", old, new, r2, r1, proof),
        ("empty proof", old, new, r1, r2, []),
        ("trailing empty element", old, new, r1, r2, [*proof, b""]),
        ("trailing old root", old, new, r1, r2, [*proof, r1]),
        ("trailing new root", old, new, r1, r2, [*proof, r2]),
        # Only the RFC's "sn is 0" check inside the loop rejects this one.
        (
            "trailing hash, roots extended",
            old,
            new,
            node_hash(SOME_HASH, r1),
            node_hash(SOME_HASH, r2),
            [*proof, SOME_HASH],
        ),
        ("preceding empty element", old, new, r1, r2, [b"", *proof]),
        ("preceding old root", old, new, r1, r2, [r1, *proof]),
        ("preceding new root", old, new, r1, r2, [r2, *proof]),
        ("preceding proof[0]", old, new, r1, r2, [proof[0], *proof]),
        ("truncated", old, new, r1, r2, proof[:-1]),
        ("last element duplicated", old, new, r1, r2, [*proof, proof[-1]]),
        ("inserted element", old, new, r1, r2, [proof[0], SOME_HASH, *proof[1:]]),
        ("elements swapped", old, new, r1, r2, [proof[1], proof[0], *proof[2:]]),
    ]
    for i, element in enumerate(proof):
        for pos in range(len(element)):
            t.append((f"proof[{i}] byte {pos} flipped", old, new, r1, r2, _replace(proof, i, _flip(element, pos))))
    return t


NONTRIVIAL_CONSISTENCY_PROOFS = [v for v in CONSISTENCY_PROOFS if v[2]]


@pytest.mark.parametrize(
    ("old", "new", "proof"), NONTRIVIAL_CONSISTENCY_PROOFS, ids=map(_vector_id, NONTRIVIAL_CONSISTENCY_PROOFS)
)
def test_tampered_published_consistency_proofs_fail(old: int, new: int, proof: list[bytes]) -> None:
    tampers = _consistency_tampers(old, new, ROOTS[old], ROOTS[new], proof)
    assert len(tampers) == 23 + 32 * len(proof)
    accepted: list[str] = []
    rejected_sizes: list[str] = []
    for desc, o, n, r1, r2, p in tampers:
        if o > n:
            # A shrinking tree is reported as an error rather than a mere "does not verify".
            with pytest.raises(ValueError, match=rf"^old_size {o} is greater than new_size {n}$"):
                verify_consistency(o, n, r1, r2, p)
            rejected_sizes.append(desc)
        elif verify_consistency(o, n, r1, r2, p):
            accepted.append(desc)
    assert accepted == []
    assert rejected_sizes == {(6, 8): ["new // 2"], (6, 7): ["new // 2"]}.get((old, new), [])


def test_consistency_sizes_accepted_with_published_roots() -> None:
    # old_size fixes where the old tree ends, so only the true one verifies; like tree_size in
    # inclusion proofs, new_size is only bound through new_root (same computation for nearby sizes).
    accepted = {
        (old, new): (
            [o for o in range(new + 1) if verify_consistency(o, new, ROOTS[old], ROOTS[new], proof)],
            [s for s in range(old, 17) if verify_consistency(old, s, ROOTS[old], ROOTS[new], proof)],
        )
        for old, new, proof in NONTRIVIAL_CONSISTENCY_PROOFS
    }
    assert accepted == {
        (1, 8): ([1], [5, 6, 7, 8]),
        (6, 8): ([6], [7, 8]),
        (2, 5): ([2], [5, 6, 7, 8]),
        (6, 7): ([6], [7, 8]),
    }


@pytest.mark.parametrize(
    ("old", "new", "r1", "r2", "proof", "expected"),
    [
        pytest.param(0, 0, ROOTS[0], ROOTS[0], [], True, id="empty to empty"),
        pytest.param(0, 0, ROOTS[0], ROOTS[0], [ROOTS[0]], False, id="empty to empty with proof"),
        pytest.param(0, 0, ROOTS[1], ROOTS[1], [], False, id="size 0 with non-empty root"),
        pytest.param(0, 0, ROOTS[0], ROOTS[1], [], False, id="size 0 roots differ"),
        pytest.param(0, 5, ROOTS[0], ROOTS[5], [], True, id="empty tree is a prefix of all"),
        pytest.param(0, 5, ROOTS[0], ROOTS[5], [ROOTS[5]], False, id="from empty with proof"),
        pytest.param(0, 5, ROOTS[1], ROOTS[5], [], False, id="size 0 claims non-empty root"),
        pytest.param(3, 3, ROOTS[3], ROOTS[3], [], True, id="same size same root"),
        pytest.param(3, 3, ROOTS[3], ROOTS[4], [], False, id="same size different roots"),
        pytest.param(3, 3, ROOTS[3], ROOTS[3], [ROOTS[3]], False, id="same size with proof"),
        pytest.param(1, 2, ROOTS[1], ROOTS[2], [], False, id="growth needs a proof"),
        pytest.param(1, 2, ROOTS[1], ROOTS[2], [LEAF_HASHES[1]], True, id="1 to 2"),
        pytest.param(1, 2, ROOTS[1][:31], ROOTS[2], [LEAF_HASHES[1]], False, id="short old root"),
        pytest.param(1, 2, ROOTS[1], ROOTS[2], [LEAF_HASHES[1][:31]], False, id="short proof element"),
        pytest.param(4, 8, ROOTS[4], ROOTS[8], [NODE_HASHES[2][1]], True, id="power of two old size"),
        pytest.param(4, 8, ROOTS[4], ROOTS[8], [ROOTS[4], NODE_HASHES[2][1]], False, id="old root not omitted"),
    ],
)
def test_consistency_edge_cases(old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes], expected: bool) -> None:
    assert verify_consistency(old, new, r1, r2, proof) is expected


def test_trivial_consistency_proofs_are_empty() -> None:
    assert consistency_proof([], 0) == []
    assert consistency_proof(LEAF_HASHES, 0) == []
    assert consistency_proof(LEAF_HASHES, 8) == []
    assert consistency_proof(LEAF_HASHES[:4], 4) == []


def test_consistency_proofs_between_all_published_sizes() -> None:
    for new in range(9):
        for old in range(new + 1):
            proof = consistency_proof(LEAF_HASHES[:new], old)
            assert proof == ([] if old in (0, new) else _ref_subproof(old, LEAF_HASHES[:new], True))
            assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof) is True, (old, new)


# --- Argument errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: inclusion_proof(LEAF_HASHES, 8), "leaf index 8 is out of range for a tree of size 8"),
        (lambda: inclusion_proof(LEAF_HASHES, -1), "leaf index -1 is out of range for a tree of size 8"),
        (lambda: inclusion_proof([], 0), "leaf index 0 is out of range for a tree of size 0"),
        (lambda: inclusion_proof([LEAF_HASHES[0], b"x"], 0), "leaf_hashes[1] must be 32 bytes, got 1"),
        (lambda: root_hash([b"short"]), "leaf_hashes[0] must be 32 bytes, got 5"),
        (lambda: consistency_proof(LEAF_HASHES, -1), "old_size must be non-negative, got -1"),
        (lambda: consistency_proof(LEAF_HASHES, 9), "old_size 9 exceeds the tree size 8"),
        (lambda: consistency_proof([b""], 0), "leaf_hashes[0] must be 32 bytes, got 0"),
        (lambda: verify_inclusion(LEAF_HASHES[0], -1, 8, [], ROOTS[8]), "index must be non-negative, got -1"),
        (
            lambda: verify_inclusion(LEAF_HASHES[0], 0, -8, [], ROOTS[8]),
            "tree_size must be non-negative, got -8",
        ),
        (lambda: verify_consistency(-1, 8, ROOTS[1], ROOTS[8], []), "old_size must be non-negative, got -1"),
        (lambda: verify_consistency(0, -2, ROOTS[0], ROOTS[8], []), "new_size must be non-negative, got -2"),
        (lambda: verify_consistency(8, 6, ROOTS[8], ROOTS[6], []), "old_size 8 is greater than new_size 6"),
        (lambda: CompactRange(-1), "size must be non-negative, got -1"),
        (lambda: CompactRange(3, [ROOTS[2]]), "a compact range of size 3 has 2 nodes, got 1"),
        (lambda: CompactRange(0, [ROOTS[1]]), "a compact range of size 0 has 0 nodes, got 1"),
        (lambda: CompactRange(8), "a compact range of size 8 has 1 nodes, got 0"),
        (lambda: CompactRange(3, [ROOTS[2], b"abc"]), "nodes[1] must be 32 bytes, got 3"),
        (lambda: CompactRange().append(b"\x00" * 31), "leaf hash must be 32 bytes, got 31"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments_raise_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call()


def test_failed_append_leaves_compact_range_unchanged() -> None:
    cr = CompactRange(3, COMPACT_NODES[3])
    with pytest.raises(ValueError, match=r"^leaf hash must be 32 bytes, got 0$"):
        cr.append(b"")
    assert (cr.size, cr.nodes, cr.root()) == (3, COMPACT_NODES[3], ROOTS[3])


# --- Large trees -------------------------------------------------------------------------------
def _stack_depth() -> int:
    depth, frame = 0, sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    return depth


def test_million_leaf_proofs_stay_within_a_logarithmic_stack() -> None:
    n = 1_000_000
    leaves = [i.to_bytes(32, "big") for i in range(n)]
    old_size = 654_321
    saved = sys.getrecursionlimit()
    # Headroom for log2(n) = 20 levels of recursion but far below one frame per leaf.
    sys.setrecursionlimit(_stack_depth() + 60)
    try:
        path = inclusion_proof(leaves, 0)
        cons = consistency_proof(leaves, old_size)
        old_root = root_hash(leaves[:old_size])
        root = root_hash(leaves)
    finally:
        sys.setrecursionlimit(saved)
    # Leaf 0: 19 levels inside the left 2**19 subtree, plus that subtree's sibling.
    assert len(path) == 20
    assert len(cons) == 21
    assert verify_inclusion(leaves[0], 0, n, path, root) is True
    assert verify_consistency(old_size, n, old_root, root, cons) is True


# --- Properties --------------------------------------------------------------------------------
_leaf_lists = st.lists(st.binary(max_size=24), max_size=200, unique=True).map(lambda data: [leaf_hash(d) for d in data])


def _decomposition(size: int) -> list[tuple[int, int]]:
    """The leaf ranges of the perfect subtrees of a tree of ``size``, left to right."""
    ranges, start = [], 0
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            ranges.append((start, start + (1 << bit)))
            start += 1 << bit
    return ranges


@settings(max_examples=60, deadline=None)
@given(leaves=_leaf_lists)
def test_roots_and_frontier_match_reference_for_every_prefix(leaves: list[bytes]) -> None:
    cr = CompactRange()
    for size in range(len(leaves) + 1):
        if size:
            cr.append(leaves[size - 1])
        expected = _ref_mth(leaves[:size])
        assert root_hash(leaves[:size]) == expected
        assert cr.root() == expected
        assert cr.nodes == [_ref_mth(leaves[a:b]) for a, b in _decomposition(size)]


@settings(max_examples=60, deadline=None)
@given(leaves=_leaf_lists.filter(bool))
def test_every_inclusion_proof_matches_reference_and_verifies(leaves: list[bytes]) -> None:
    n, root = len(leaves), root_hash(leaves)
    for index in range(n):
        proof = inclusion_proof(leaves, index)
        assert proof == _ref_path(index, leaves)
        assert verify_inclusion(leaves[index], index, n, proof, root) is True


@settings(max_examples=60, deadline=None)
@given(leaves=_leaf_lists)
def test_every_consistency_proof_matches_reference_and_verifies(leaves: list[bytes]) -> None:
    n, root = len(leaves), root_hash(leaves)
    for old in range(n + 1):
        proof = consistency_proof(leaves, old)
        assert proof == ([] if old in (0, n) else _ref_subproof(old, leaves, True))
        assert verify_consistency(old, n, root_hash(leaves[:old]), root, proof) is True


@settings(max_examples=150, deadline=None)
@given(data=st.data(), leaves=_leaf_lists.filter(lambda ls: len(ls) >= 2))
def test_tampered_inclusion_proofs_fail(data: st.DataObject, leaves: list[bytes]) -> None:
    n, root = len(leaves), root_hash(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(leaves, index)
    leaf = leaves[index]
    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    pos = data.draw(st.integers(0, 31), label="byte")
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index), label="other index")
    assert verify_inclusion(leaf, index, n, _replace(proof, i, _flip(proof[i], pos)), root) is False
    assert verify_inclusion(leaf, other, n, proof, root) is False
    assert verify_inclusion(leaves[other], index, n, proof, root) is False
    assert verify_inclusion(leaf, index, n, proof[:-1], root) is False
    assert verify_inclusion(leaf, index, n, [*proof, proof[-1]], root) is False
    assert verify_inclusion(leaf, index, n, [*proof, root], node_hash(root, root)) is False
    assert verify_inclusion(leaf, index, n, proof, _flip(root, pos)) is False


@settings(max_examples=150, deadline=None)
@given(data=st.data(), leaves=_leaf_lists.filter(lambda ls: len(ls) >= 2))
def test_tampered_consistency_proofs_fail(data: st.DataObject, leaves: list[bytes]) -> None:
    n = len(leaves)
    old = data.draw(st.integers(1, n - 1), label="old_size")
    r1, r2 = root_hash(leaves[:old]), root_hash(leaves)
    proof = consistency_proof(leaves, old)
    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    pos = data.draw(st.integers(0, 31), label="byte")
    assert verify_consistency(old, n, r1, r2, _replace(proof, i, _flip(proof[i], pos))) is False
    assert verify_consistency(old, n, r2, r1, proof) is False
    assert verify_consistency(old, n, r1, r2, proof[:-1]) is False
    assert verify_consistency(old, n, r1, r2, [*proof, proof[-1]]) is False
    assert verify_consistency(old, n, node_hash(r2, r1), node_hash(r2, r2), [*proof, r2]) is False
    # Rewriting history: the new tree changes a leaf the old tree already committed to.
    changed = data.draw(st.integers(0, old - 1), label="rewritten leaf")
    forged = _replace(leaves, changed, leaf_hash(b"forged" + leaves[changed]))
    assert verify_consistency(old, n, r1, root_hash(forged), consistency_proof(forged, old)) is False


@settings(max_examples=100, deadline=None)
@given(data=st.data(), leaves=_leaf_lists)
def test_restored_compact_range_continues_like_a_fresh_one(data: st.DataObject, leaves: list[bytes]) -> None:
    cut = data.draw(st.integers(0, len(leaves)), label="persisted size")
    fresh = CompactRange()
    for h in leaves[:cut]:
        fresh.append(h)
    restored = CompactRange(fresh.size, fresh.nodes)
    assert (restored.size, restored.nodes, restored.root()) == (cut, fresh.nodes, root_hash(leaves[:cut]))
    for size in range(cut + 1, len(leaves) + 1):
        fresh.append(leaves[size - 1])
        restored.append(leaves[size - 1])
        assert restored.size == fresh.size == size
        assert restored.nodes == fresh.nodes
        assert restored.root() == fresh.root() == root_hash(leaves[:size])
