"""Verifiable unmasking (issue 11, finding 6): a share holder that lies cannot corrupt the sum or abort
the cohort while t right shares of every secret remain; it is named and left out.

The crafted attack: a holder among the t lowest x-coordinates of an owner's responders sends
y + λ⁻¹ mod p (λ its Lagrange coefficient at 0 for those t points, computable from the unmask request),
which shifts the reconstructed self-mask seed by exactly one. Before the fix the gateway released
uniform garbage without noticing (20 of 20 trials).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import shamir
from fl_protocol.secagg.messages import Abort, Roster, UnmaskRequest, UnmaskShares
from fl_protocol.secagg.server import AggregateResult
from fl_protocol.secagg.simulate import Simulation

RING_BITS = 16
DIM = 16
N = 20


def _inputs(sim: Simulation, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {node: rng.integers(0, 2**RING_BITS, DIM, dtype=np.uint32) for node in sim.node_ids}


def _exact(inputs: dict[str, np.ndarray], survivors: tuple[str, ...]) -> np.ndarray:
    total = sum(inputs[s].astype(np.uint64) for s in survivors)
    return (np.asarray(total) % (1 << RING_BITS)).astype(np.uint32)


def _lowest_responders(sim: Simulation, owner: str, request: UnmaskRequest) -> list[int]:
    """x-coordinates of the t lowest responders holding a share of `owner` (the points the gateway used)."""
    cohort = sim.server.cohort
    assert cohort is not None
    holders = cohort.holders(owner) & set(request.signatures)
    return sorted(cohort.index[h] for h in holders)[: cohort.threshold]


def _lagrange_at_zero(xs: list[int], x_i: int) -> int:
    numerator, denominator = 1, 1
    for x_j in xs:
        if x_j != x_i:
            numerator = numerator * x_j % shamir.PRIME
            denominator = denominator * (x_j - x_i) % shamir.PRIME
    return numerator * pow(denominator, -1, shamir.PRIME) % shamir.PRIME


def _pick_attack(sim: Simulation, trial: int) -> tuple[str, str]:
    """(attacker, target): the target is a neighbour whose t lowest holders include the attacker."""
    cohort = sim.server.cohort
    assert cohort is not None
    for offset in range(N):
        attacker = sim.node_ids[(trial + offset) % N]
        for target in sorted(cohort.neighbours[attacker]):
            lowest = sorted(cohort.index[h] for h in cohort.holders(target))[: cohort.threshold]
            if cohort.index[attacker] in lowest:
                return attacker, target
    raise AssertionError("no node is among the t lowest holders of a neighbour")


def _crafted(sim: Simulation, trial: int, chosen: list[str]):  # type: ignore[no-untyped-def]
    """Tamper hook: once the cohort is fixed, pick (attacker, target) and shift the target's seed by one."""

    def tamper(node: str, answer: UnmaskShares, request: UnmaskRequest) -> UnmaskShares:
        if not chosen:
            chosen.extend(_pick_attack(sim, trial))
        attacker, target = chosen
        if node != attacker:
            return answer
        cohort = sim.server.cohort
        assert cohort is not None
        xs = _lowest_responders(sim, target, request)
        x_i = cohort.index[attacker]
        assert x_i in xs
        shift = pow(_lagrange_at_zero(xs, x_i), -1, shamir.PRIME)
        b_shares = dict(answer.b_shares)
        b_shares[target] = (b_shares[target] + shift) % shamir.PRIME
        return dataclasses.replace(answer, b_shares=b_shares)

    return tamper


def _advertised(sim: Simulation) -> None:
    """Run the advertise stage so the cohort (graph, indices) is known before the attack is chosen."""
    for client in sim.clients.values():
        sim.server.on_advertise(client.advertise())


def test_crafted_share_no_longer_corrupts_the_sum_and_its_sender_is_named() -> None:
    completed = 0
    for trial in range(20):
        sim = Simulation(n=N, dimension=DIM, ring_bits=RING_BITS, seed=f"crafted-{trial}".encode())
        inputs = _inputs(sim, trial)
        chosen: list[str] = []
        result = sim.run(inputs.__getitem__, tamper=_crafted(sim, trial, chosen))
        assert isinstance(result, AggregateResult), result
        assert np.array_equal(result.values, _exact(inputs, result.survivors))
        assert result.misbehaving == (chosen[0],)
        completed += 1
    assert completed == 20


def test_random_wrong_b_share_completes_instead_of_aborting() -> None:
    sim = Simulation(n=12, dimension=DIM, ring_bits=RING_BITS, seed=b"random-share")
    inputs = _inputs(sim, 5)
    rng = np.random.default_rng(11)

    def tamper(node: str, answer: UnmaskShares, request: UnmaskRequest) -> UnmaskShares:
        if node != "node-003":
            return answer
        b_shares = {o: int(rng.integers(0, 2**62)) ** 8 % shamir.PRIME for o in answer.b_shares}
        return dataclasses.replace(answer, b_shares=b_shares)

    result = sim.run(inputs.__getitem__, tamper=tamper)
    assert isinstance(result, AggregateResult), result
    assert np.array_equal(result.values, _exact(inputs, result.survivors))
    assert result.misbehaving == ("node-003",)


def test_wrong_s_share_of_a_dropped_node_is_caught_by_its_public_key() -> None:
    sim = Simulation(n=12, dimension=DIM, ring_bits=RING_BITS, seed=b"s-share")
    inputs = _inputs(sim, 6)
    liar: list[str] = []

    def tamper(node: str, answer: UnmaskShares, request: UnmaskRequest) -> UnmaskShares:
        if liar or not answer.s_shares:
            return answer
        liar.append(node)
        s_shares = {o: (y + 1) % shamir.PRIME for o, y in answer.s_shares.items()}
        return dataclasses.replace(answer, s_shares=s_shares)

    result = sim.run(inputs.__getitem__, drop_before_upload=["node-007"], tamper=tamper)
    assert isinstance(result, AggregateResult), result
    assert "node-007" in result.dropped
    assert np.array_equal(result.values, _exact(inputs, result.survivors))
    assert result.misbehaving == tuple(liar)


def test_with_only_t_shares_a_wrong_one_aborts_rather_than_release_garbage() -> None:
    # complete graph of 5, t = 5: no redundancy, so one wrong share leaves fewer than t right ones
    sim = Simulation(n=5, dimension=DIM, ring_bits=RING_BITS, seed=b"tight", degree=4, threshold=5)
    inputs = _inputs(sim, 7)

    def tamper(node: str, answer: UnmaskShares, request: UnmaskRequest) -> UnmaskShares:
        if node != "node-001":
            return answer
        return dataclasses.replace(
            answer, b_shares={o: (y + 1) % shamir.PRIME for o, y in answer.b_shares.items()}
        )

    result = sim.run(inputs.__getitem__, tamper=tamper)
    assert isinstance(result, Abort)
    assert "do not reconstruct a verified secret" in result.reason


def test_an_owner_whose_commitment_is_false_aborts_the_cohort() -> None:
    sim = Simulation(n=8, dimension=DIM, ring_bits=RING_BITS, seed=b"false-commitment")
    inputs = _inputs(sim, 8)
    original = sim.server.on_share_keys

    def lying_commitment(message):  # type: ignore[no-untyped-def]
        if message.sender == "node-002":
            message = dataclasses.replace(message, b_commitment=hashlib.sha256(b"not my seed").digest())
        return original(message)

    sim.server.on_share_keys = lying_commitment  # type: ignore[method-assign]
    result = sim.run(inputs.__getitem__)
    assert isinstance(result, Abort)
    assert "node-002" in result.reason


def test_robust_reconstruct_finds_the_secret_and_the_liars() -> None:
    rng = np.random.default_rng(3)
    secret = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
    shares = shamir.split(
        secret,
        threshold=4,
        xs=range(1, 9),
        rng_bytes=lambda n: bytes(rng.integers(0, 256, n, dtype=np.uint8)),
    )
    bad = dict(shares)
    bad[1] = (bad[1] + 1) % shamir.PRIME
    bad[3] = 12345
    decoded = shamir.robust_reconstruct(bad, threshold=4, check=lambda s: s == secret)
    assert decoded.secret == secret and decoded.bad_xs == (1, 3) and decoded.attributable
    bad[5] = 0  # 3 wrong of 8 at t = 4: still recovered, but too many to name anyone with certainty
    decoded = shamir.robust_reconstruct(bad, threshold=4, check=lambda s: s == secret)
    assert decoded.secret == secret and not decoded.attributable
    with pytest.raises(ValueError, match="all shares agree on a secret that fails the check"):
        shamir.robust_reconstruct(shares, threshold=4, check=lambda s: False)
    with pytest.raises(ValueError, match="no 4 shares passed the check in 3 attempts"):
        shamir.robust_reconstruct(bad, threshold=4, check=lambda s: s == secret, max_attempts=3)


def test_protocol_error_is_the_gateway_failure_for_too_few_shares() -> None:
    from fl_protocol.secagg.unmask import _Recovery

    sim = Simulation(n=4, dimension=DIM, ring_bits=RING_BITS)
    _advertised(sim)
    assert isinstance(sim.server.close_advertise(), Roster)
    assert sim.server.cohort is not None
    with pytest.raises(ProtocolError, match="only 1 of t=3 b-shares for node-000"):
        _Recovery(sim.server.cohort, "f", 1).secret("b", "node-000", {1: 5}, lambda s: True)
