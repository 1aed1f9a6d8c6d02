"""Random k-regular neighbour graph for SecAgg+ (Bell et al. 2020, §3: a Harary graph H(k, n) on a
random permutation of the nodes), generated deterministically from a public 32-byte seed so that every
node and the gateway compute the same graph.

H(k, n): nodes on a ring; each is joined to its k/2 nearest nodes on each side, and for odd k (n even)
also to the opposite node. The permutation comes from Fisher-Yates driven by AES-256-CTR keyed with the
seed (via HKDF for domain separation) with rejection sampling, so it is uniform and reproducible.
"""

from __future__ import annotations

import math

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GRAPH_SEED_BYTES = 32
SMALL_COHORT = 8  # at or below this size the graph is complete (k = n - 1)


def default_degree(n: int) -> int:
    """k ≈ 2·log2(n) rounded up to a valid parity (n·k even); k = n - 1 for small cohorts."""
    if n < 2:
        raise ValueError("a cohort needs at least 2 nodes")
    k = math.ceil(2 * math.log2(n))
    if n <= SMALL_COHORT or k >= n - 1:
        return n - 1
    if (n * k) % 2:
        k += 1
    return min(k, n - 1)


def check_degree(n: int, k: int) -> None:
    """Raise ValueError unless a k-regular graph on n nodes exists (1 <= k <= n-1, n·k even)."""
    if not 1 <= k <= n - 1:
        raise ValueError(f"degree must be in [1, {n - 1}] for n={n}, got {k}")
    if (n * k) % 2:
        raise ValueError(f"no {k}-regular graph on {n} nodes (n*k must be even)")


def neighbour_graph(n: int, k: int, seed: bytes) -> list[frozenset[int]]:
    """Neighbour sets of a k-regular graph on nodes 0..n-1 (symmetric, no self loops)."""
    check_degree(n, k)
    if len(seed) != GRAPH_SEED_BYTES:
        raise ValueError("graph seed must be 32 bytes")
    order = _permutation(n, seed)  # ring position -> node
    neighbours: list[set[int]] = [set() for _ in range(n)]
    offsets = list(range(1, k // 2 + 1))
    if k % 2:
        offsets.append(n // 2)
    for position, node in enumerate(order):
        for offset in offsets:
            other = order[(position + offset) % n]
            neighbours[node].add(other)
            neighbours[other].add(node)
    return [frozenset(s) for s in neighbours]


def _permutation(n: int, seed: bytes) -> list[int]:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedlora/secagg/v1/graph").derive(seed)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = _uniform_below(i + 1, encryptor)
        order[i], order[j] = order[j], order[i]
    return order


def _uniform_below(bound: int, encryptor: CipherContext) -> int:
    """Uniform integer in [0, bound) from the keystream, by rejection (no modulo bias)."""
    limit = (1 << 32) - ((1 << 32) % bound)
    while True:
        value = int.from_bytes(encryptor.update(bytes(4)), "little")
        if value < limit:
            return value % bound
