"""Implementation notes: RFC 9162 (Certificate Transparency v2) §2.1 Merkle tree algorithms.

Invariants relied on by the tamper-evident audit log:

* Hash function is SHA-256; every hash handled here is exactly 32 bytes.
* Domain separation (§2.1.1): a leaf hash is SHA-256(0x00 || data), an interior node hash is
  SHA-256(0x01 || left || right), so a leaf can never be passed off as an interior node.
* The empty tree hash is MTH({}) = SHA-256(b"") (§2.1.1); a one-leaf tree's root is its leaf hash.
* Trees are split at k, the largest power of two strictly smaller than n (§2.1.1), so the tree
  of size n is the left-packed sequence of perfect subtrees given by the binary digits of n.
* A compact range ("frontier") of a tree of size n therefore holds exactly popcount(n) subtree
  hashes, largest (leftmost) first; appending a leaf touches O(log n) of them.
* Proof generation works on index ranges, never list copies per level, and is iterative, so no
  recursion depth grows with the tree.
* Verifiers return False for any proof that does not verify (wrong length, wrong hash, hash of
  the wrong size); they raise ValueError only for arguments that cannot be tree coordinates
  (negative numbers, old_size > new_size).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1: MTH({d}) = HASH(0x00 || d)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1: interior node = HASH(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(leaf_hashes):
        if len(h) != HASH_SIZE:
            raise ValueError(f"leaf_hashes[{i}] must be {HASH_SIZE} bytes, got {len(h)}")


def _mth(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """RFC 9162 §2.1.1 MTH(D[lo:hi]) for 0 <= lo < hi, computed bottom-up.

    Pairing neighbours level by level and carrying an odd last node up unchanged builds exactly
    the tree of the recursive definition (split at the largest power of two), without recursion.
    """
    level = list(leaf_hashes[lo:hi])
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1: Merkle Tree Hash over already-hashed leaves; MTH({}) = SHA-256(b"")."""
    _check_leaf_hashes(leaf_hashes)
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1: PATH(m, D_n), the audit path for leaf ``index``, leaf-side first.

    PATH(m, D_n) = PATH(m, D[0:k]) : MTH(D[k:n])      if m < k
                 = PATH(m - k, D[k:n]) : MTH(D[0:k])  if m >= k
    The recursion is unrolled: descend from the root collecting siblings, then reverse.
    """
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is out of range for a tree of size {n}")
    _check_leaf_hashes(leaf_hashes)
    siblings: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_mth(leaf_hashes, lo, lo + k))
            lo += k
    siblings.reverse()
    return siblings


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: check that ``leaf`` (a leaf hash) is at ``index`` in the tree with ``root``.

    The tree size is only authenticated through ``root``: take both from the same signed checkpoint.
    """
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    if tree_size < 0:
        raise ValueError(f"tree_size must be non-negative, got {tree_size}")
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return False
    # 1. leaf_index >= tree_size fails verification.
    if index >= tree_size:
        return False
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn = index, tree_size - 1
    r = leaf
    # 4. For each p in the inclusion path:
    for p in proof:
        # a. A proof longer than the path fails.
        if sn == 0:
            return False
        # b. fn is a right child, or the last node of its level (promoted without a sibling).
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # ii. Skip the levels where fn was promoted unchanged.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        # c.
        fn >>= 1
        sn >>= 1
    # 5. The whole path must have been consumed and lead to the root.
    return sn == 0 and r == root


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1: PROOF(m, D_n) = SUBPROOF(m, D_n, true) with m = ``old_size``.

    SUBPROOF(m, D_m, true) = {}; SUBPROOF(m, D_m, false) = {MTH(D_m)};
    for m < n: SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          if m <= k
               SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  if m > k
    The RFC defines it for 0 < m < n; m = 0 and m = n give the empty proof, as they are always
    consistent. The recursion is unrolled: descend collecting hashes, then reverse.
    """
    n = len(leaf_hashes)
    if old_size < 0:
        raise ValueError(f"old_size must be non-negative, got {old_size}")
    if old_size > n:
        raise ValueError(f"old_size {old_size} exceeds the tree size {n}")
    _check_leaf_hashes(leaf_hashes)
    if old_size in (0, n):
        return []
    collected: list[bytes] = []
    lo, hi, m, have_root = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            collected.append(_mth(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            collected.append(_mth(leaf_hashes, lo, lo + k))
            lo += k
            m -= k
            # The old root is no longer a node of this subtree, so its piece must be sent.
            have_root = False
    if not have_root:
        collected.append(_mth(leaf_hashes, lo, hi))
    collected.reverse()
    return collected


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: check that the tree (new_size, new_root) extends (old_size, old_root).

    The RFC algorithm covers 0 < old_size < new_size. The trivial cases need an empty proof:
    equal sizes need equal roots, and a size-0 tree must have the empty-tree root.
    """
    if old_size < 0:
        raise ValueError(f"old_size must be non-negative, got {old_size}")
    if new_size < 0:
        raise ValueError(f"new_size must be non-negative, got {new_size}")
    if old_size > new_size:
        raise ValueError(f"old_size {old_size} is greater than new_size {new_size}")
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE or any(len(c) != HASH_SIZE for c in proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not proof and old_root == new_root
    # 1. An empty path fails.
    if not proof:
        return False
    path = list(proof)
    # 2. A power-of-two old tree is a node of the new tree; the proof omits it.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3.
    fn, sn = old_size - 1, new_size - 1
    # 4. Skip the levels where the old tree's last node is a right child already covered.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        # a. A proof longer than the path fails.
        if sn == 0:
            return False
        # b.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c.
        fn >>= 1
        sn >>= 1
    # 7.
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """Frontier of the tree: the roots of the perfect subtrees given by the binary digits of size.

    For size n = 2^a + 2^b + ... (a > b > ...) it holds MTH of the leaf ranges [0, 2^a),
    [2^a, 2^a + 2^b), ... left to right, i.e. popcount(n) hashes. Appending merges equal-sized
    subtrees like a binary counter carry; root() folds them right to left (RFC 9162 §2.1.1).
    ``(size, nodes)`` is the state to persist; pass it back to the constructor to resume.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise ValueError(f"size must be non-negative, got {size}")
        expected = size.bit_count()
        if len(nodes) != expected:
            raise ValueError(f"a compact range of size {size} has {expected} nodes, got {len(nodes)}")
        for i, h in enumerate(nodes):
            if len(h) != HASH_SIZE:
                raise ValueError(f"nodes[{i}] must be {HASH_SIZE} bytes, got {len(h)}")
        self._size = size
        self._nodes = [bytes(h) for h in nodes]

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> list[bytes]:
        """Subtree hashes, left to right (largest subtree first); a copy, safe to persist."""
        return list(self._nodes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash in O(log n): each trailing 1 bit of size is a subtree to merge with."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        node = leaf_hash
        carry = self._size
        while carry & 1:
            node = node_hash(self._nodes.pop(), node)
            carry >>= 1
        self._nodes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """RFC 9162 §2.1.1 MTH of all appended leaves: the right fold of the frontier."""
        if not self._nodes:
            return EMPTY_ROOT
        r = self._nodes[-1]
        for h in reversed(self._nodes[:-1]):
            r = node_hash(h, r)
        return r

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, nodes=[{', '.join(h.hex() for h in self._nodes)}])"
