"""Known-answer vectors and unit tests for the SecAgg+ primitives: keys/KDF, share encryption, PRG,
Shamir, neighbour graph."""

from __future__ import annotations

import json
import struct
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fl_protocol.errors import DecodeError
from fl_protocol.secagg import graph, keys, prg, shamir
from fl_protocol.secagg.simulate import deterministic_rng

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", _load("secagg_kdf.json"))
def test_kdf_known_answers(case: dict) -> None:
    h = bytes.fromhex
    fleet, round_id, a, b = case["fleet"], case["round_id"], case["node_a"], case["node_b"]
    assert keys.public_from_private(h(case["a_s_private_hex"])) == h(case["a_s_public_hex"])
    from_a = keys.derive_pair_seed(
        h(case["a_s_private_hex"]),
        h(case["b_s_public_hex"]),
        fleet=fleet,
        round_id=round_id,
        node_a=a,
        node_b=b,
    )
    from_b = keys.derive_pair_seed(
        h(case["b_s_private_hex"]),
        h(case["a_s_public_hex"]),
        fleet=fleet,
        round_id=round_id,
        node_a=b,
        node_b=a,
    )
    assert from_a == from_b == h(case["pair_seed_hex"])
    a_to_b = keys.derive_share_key(
        h(case["a_c_private_hex"]), h(case["b_c_public_hex"]), fleet=fleet, round_id=round_id, src=a, dst=b
    )
    a_to_b_at_b = keys.derive_share_key(
        h(case["b_c_private_hex"]), h(case["a_c_public_hex"]), fleet=fleet, round_id=round_id, src=a, dst=b
    )
    b_to_a = keys.derive_share_key(
        h(case["b_c_private_hex"]), h(case["a_c_public_hex"]), fleet=fleet, round_id=round_id, src=b, dst=a
    )
    assert a_to_b == a_to_b_at_b == h(case["share_key_a_to_b_hex"])
    assert b_to_a == h(case["share_key_b_to_a_hex"]) != a_to_b


def test_kdf_binds_fleet_round_and_pair() -> None:
    rng = deterministic_rng(b"kdf-binding")
    a, b = keys.generate_key_pair(rng), keys.generate_key_pair(rng)
    base = {"fleet": "f", "round_id": 1, "node_a": "u", "node_b": "v"}
    seed = keys.derive_pair_seed(a.private_bytes, b.public_bytes, **base)  # type: ignore[arg-type]
    for change in ({"fleet": "g"}, {"round_id": 2}, {"node_b": "w"}):
        other = keys.derive_pair_seed(a.private_bytes, b.public_bytes, **{**base, **change})  # type: ignore[arg-type]
        assert other != seed


@pytest.mark.parametrize("case", _load("secagg_prg.json"))
def test_prg_known_answers(case: dict) -> None:
    seed = bytes.fromhex(case["seed_hex"])
    values = prg.expand_mask(seed, case["dimension"], case["ring_bits"])
    assert values.dtype == np.uint32
    assert values.tolist() == case["values"]


def test_prg_matches_independent_aes_ctr_over_chunk_boundaries() -> None:
    seed = bytes(range(32))
    dimension = (prg._CHUNK_BYTES // 4) * 2 + 5  # crosses two chunk boundaries, odd tail
    stream = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor().update(bytes(4 * dimension))
    expected = np.array(struct.unpack(f"<{dimension}I", stream), dtype=np.uint32)
    np.testing.assert_array_equal(prg.expand_mask(seed, dimension, 32), expected)
    np.testing.assert_array_equal(prg.expand_mask(seed, dimension, 12), expected & 0xFFF)
    acc = np.full(dimension, 7, dtype=np.uint32)
    expander = prg.MaskExpander(dimension)
    expander.add_into(acc, seed)
    expander.add_into(acc, seed, subtract=True)
    assert (acc == 7).all()


@pytest.mark.parametrize("ring_bits", [7, 33])
def test_prg_rejects_bad_ring_bits(ring_bits: int) -> None:
    with pytest.raises(ValueError, match=r"ring_bits must be in \[8, 32\]"):
        prg.expand_mask(bytes(32), 4, ring_bits)


def test_prg_rejects_short_seed() -> None:
    with pytest.raises(ValueError, match="mask seed must be 32 bytes"):
        prg.expand_mask(bytes(16), 4, 16)  # a folded/short seed is never accepted


def test_share_encryption_round_trip_and_every_flipped_bit_refused() -> None:
    rng = deterministic_rng(b"aead")
    key = rng(32)
    ad = keys.share_associated_data("f", 3, "u", "v")
    blob = keys.encrypt_share(key, b"share-bytes", ad, rng)
    assert keys.decrypt_share(key, blob, ad) == b"share-bytes"
    for bit in range(8 * len(blob)):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(DecodeError, match="invalid message"):
            keys.decrypt_share(key, bytes(tampered), ad)
    for other in (("g", 3, "u", "v"), ("f", 4, "u", "v"), ("f", 3, "v", "u"), ("f", 3, "u", "w")):
        with pytest.raises(DecodeError, match="invalid message"):
            keys.decrypt_share(key, blob, keys.share_associated_data(*other))


def test_low_order_public_key_is_refused() -> None:
    pair = keys.generate_key_pair(deterministic_rng(b"low-order"))
    with pytest.raises(DecodeError, match="invalid message"):
        keys.derive_pair_seed(pair.private_bytes, bytes(32), fleet="f", round_id=1, node_a="a", node_b="b")


def test_shamir_any_t_subset_reconstructs_and_fewer_do_not_suffice() -> None:
    rng = deterministic_rng(b"shamir")
    secret = rng(32)
    shares = shamir.split(secret, threshold=3, xs=range(1, 6), rng_bytes=rng)
    for subset in combinations(shares, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, threshold=3) == secret
    with pytest.raises(ValueError, match="not enough shares"):
        shamir.reconstruct({1: shares[1], 2: shares[2]}, threshold=3)


def test_shamir_share_encoding_is_strict() -> None:
    assert shamir.share_from_bytes(shamir.share_to_bytes(12345)) == 12345
    with pytest.raises(ValueError, match="share out of field range"):
        shamir.share_from_bytes(shamir.PRIME.to_bytes(66, "big"))
    with pytest.raises(ValueError, match="share must be 66 bytes"):
        shamir.share_from_bytes(bytes(65))


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9, 10, 33, 100, 500])
def test_default_degree_is_valid(n: int) -> None:
    k = graph.default_degree(n)
    graph.check_degree(n, k)
    if n <= graph.SMALL_COHORT:
        assert k == n - 1


@pytest.mark.parametrize(("n", "k"), [(3, 2), (10, 3), (10, 4), (11, 6), (40, 39), (500, 18)])
def test_neighbour_graph_is_k_regular_symmetric_connected_and_deterministic(n: int, k: int) -> None:
    seed = bytes(range(32))
    g = graph.neighbour_graph(n, k, seed)
    assert g == graph.neighbour_graph(n, k, seed)
    assert all(len(nbrs) == k and i not in nbrs for i, nbrs in enumerate(g))
    assert all(i in g[j] for i, nbrs in enumerate(g) for j in nbrs)
    seen, frontier = {0}, {0}
    while frontier:
        frontier = {j for i in frontier for j in g[i]} - seen
        seen |= frontier
    assert len(seen) == n
    if k < n - 1:
        assert g != graph.neighbour_graph(n, k, bytes(32))


def test_neighbour_graph_rejects_impossible_degree() -> None:
    with pytest.raises(ValueError, match=r"no 3-regular graph on 5 nodes \(n\*k must be even\)"):
        graph.neighbour_graph(5, 3, bytes(32))  # n·k odd
    with pytest.raises(ValueError, match=r"degree must be in \[1, 4\] for n=5"):
        graph.neighbour_graph(5, 5, bytes(32))
