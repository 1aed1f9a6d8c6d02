"""Property tests: exact sums under any dropout pattern (or abort below t), and Shamir's guarantees."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fl_protocol.secagg import shamir
from fl_protocol.secagg.messages import Abort
from fl_protocol.secagg.server import AggregateResult
from fl_protocol.secagg.simulate import Simulation, deterministic_rng


def _feasible(sim: Simulation, before: set[str], after: set[str]) -> bool:
    """Whether every needed secret can get t shares: the exact success condition of the protocol."""
    cohort = sim.server.cohort
    assert cohort is not None
    t = cohort.threshold
    survivors = set(sim.node_ids) - before
    responders = survivors - after
    if len(survivors) < t or len(responders) < t:
        return False
    if any(len(cohort.holders(u) & responders) < t for u in survivors):
        return False
    return all(
        len(cohort.neighbours[d] & responders) >= t for d in before if cohort.neighbours[d] & survivors
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_unmasked_sum_is_exact_or_the_cohort_aborts(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 40), label="n")
    degree = data.draw(st.sampled_from([k for k in range(1, n) if (n * k) % 2 == 0]), label="k")
    threshold = data.draw(st.integers((degree + 1) // 2 + 1, degree + 1), label="t")
    ring_bits = data.draw(st.integers(8, 32), label="ring_bits")
    dimension = data.draw(st.integers(1, 12), label="d")
    order = data.draw(st.permutations(range(n)), label="order")
    few = max(1, n // 4)  # mostly few dropouts (success expected), sometimes many (abort expected)
    n_before = data.draw(st.one_of(st.integers(0, few), st.integers(0, n)), label="dropped before upload")
    rest = n - n_before
    n_after = data.draw(
        st.one_of(st.integers(0, min(few, rest)), st.integers(0, rest)), label="dropped after"
    )
    sim = Simulation(n=n, dimension=dimension, ring_bits=ring_bits, degree=degree, threshold=threshold)
    before = {sim.node_ids[i] for i in order[:n_before]}
    after = {sim.node_ids[i] for i in order[n_before : n_before + n_after]}
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="input seed"))
    inputs = {
        node: rng.integers(0, 2**ring_bits, dimension, dtype=np.uint64).astype(np.uint32)
        for node in sim.node_ids
    }

    result = sim.run(inputs.__getitem__, drop_before_upload=before, drop_after_upload=after)

    feasible = _feasible(sim, before, after)
    event(f"feasible={feasible}")
    if feasible:
        assert isinstance(result, AggregateResult)
        assert set(result.survivors) == set(sim.node_ids) - before
        total = np.zeros(dimension, dtype=object)
        for node in result.survivors:
            total += inputs[node].astype(object)
        np.testing.assert_array_equal(result.values, (total % (1 << ring_bits)).astype(np.uint32))
    else:
        assert isinstance(result, Abort)


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(1, 8),
    extra=st.integers(0, 5),
    seed=st.binary(min_size=1, max_size=8),
    data=st.data(),
)
def test_any_t_shares_reconstruct(
    secret: bytes, threshold: int, extra: int, seed: bytes, data: st.DataObject
) -> None:
    xs = data.draw(
        st.lists(st.integers(1, 10**6), min_size=threshold + extra, max_size=threshold + extra, unique=True)
    )
    shares = shamir.split(secret, threshold=threshold, xs=xs, rng_bytes=deterministic_rng(seed))
    subset = data.draw(st.lists(st.sampled_from(xs), min_size=threshold, max_size=threshold, unique=True))
    assert shamir.reconstruct({x: shares[x] for x in subset}, threshold=threshold) == secret


def _poly_through(points: list[tuple[int, int]]) -> list[int]:
    """Coefficients (low to high) of the unique polynomial of degree < len(points) through `points`."""
    p = shamir.PRIME
    coefficients = [0] * len(points)
    for i, (x_i, y_i) in enumerate(points):
        basis, denominator = [1], 1
        for j, (x_j, _) in enumerate(points):
            if j != i:
                basis = [(a - x_j * b) % p for a, b in zip([0, *basis], [*basis, 0], strict=True)]
                denominator = denominator * (x_i - x_j) % p
        scale = y_i * pow(denominator, -1, p) % p
        coefficients = [(c + scale * b) % p for c, b in zip(coefficients, basis, strict=True)]
    return coefficients


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    other=st.binary(min_size=32, max_size=32),
    threshold=st.integers(2, 7),
    seed=st.binary(min_size=1, max_size=8),
)
def test_t_minus_one_shares_are_consistent_with_every_secret(
    secret: bytes, other: bytes, threshold: int, seed: bytes
) -> None:
    """Perfect secrecy, checked through `split` itself: for the t-1 shares of `secret`, there is exactly
    one coefficient draw under which `split(other)` yields the very same t-1 shares. Since `split`'s
    coefficients are uniform and the map draw -> shares is a bijection for each secret, every secret makes
    every view of t-1 shares equally likely."""
    xs = list(range(1, threshold + 1))  # t holders; the adversary sees the first t - 1
    shares = shamir.split(secret, threshold=threshold, xs=xs, rng_bytes=deterministic_rng(seed))
    view = {x: shares[x] for x in xs[:-1]}
    points = [(0, int.from_bytes(other, "big")), *view.items()]
    coefficients = _poly_through(points)
    draws = b"".join(c.to_bytes(shamir.SHARE_BYTES, "big") for c in coefficients[1:])
    scripted = iter([draws[i : i + shamir.SHARE_BYTES] for i in range(0, len(draws), shamir.SHARE_BYTES)])
    alternative = shamir.split(other, threshold=threshold, xs=xs, rng_bytes=lambda n: next(scripted))
    assert {x: alternative[x] for x in xs[:-1]} == view
    assert shamir.reconstruct(alternative, threshold=threshold) == other


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    threshold=st.integers(2, 6),
    extra=st.integers(0, 4),
    seed=st.binary(min_size=1, max_size=8),
    data=st.data(),
)
def test_robust_reconstruct_recovers_the_checked_secret_and_names_only_liars(
    secret: bytes, threshold: int, extra: int, seed: bytes, data: st.DataObject
) -> None:
    """With up to m - t wrong shares (any values) the checked secret is found. A share named wrong under
    `attributable` is a liar's unless at least m + 2 - t - len(bad_xs) senders lied (the documented
    collusion bound: that many wrong shares can lie on another polynomial with the same secret and frame
    honest holders; beyond 2e <= m + 1 - t the decoder says the blame is not attributable). Liars outside
    the t lowest are not looked at (their shares are not needed); when one is among them and the liars are
    few (2e <= m + 1 - t), exactly the liars are named."""
    m = threshold + extra
    shares = shamir.split(secret, threshold=threshold, xs=range(1, m + 1), rng_bytes=deterministic_rng(seed))
    liars = data.draw(st.lists(st.integers(1, m), max_size=extra, unique=True))
    received = dict(shares)
    for x in liars:
        received[x] = (shares[x] + data.draw(st.integers(1, shamir.PRIME - 1))) % shamir.PRIME
    decoded = shamir.robust_reconstruct(received, threshold=threshold, check=lambda s: s == secret)
    assert decoded.secret == secret
    if decoded.attributable and len(liars) < m + 2 - threshold - len(decoded.bad_xs):
        assert set(decoded.bad_xs) <= set(liars)
    lowest = {x: received[x] for x in range(1, threshold + 1)}
    # Wrong shares among the t lowest whose errors cancel at x = 0 still give the checked secret: the
    # decoder accepts it at once and has nothing to blame (the reconstruction is right).
    try:
        harmless = shamir.reconstruct(lowest, threshold=threshold) == secret
    except ValueError:  # they interpolate to no 32-byte secret at all
        harmless = False
    if harmless or not set(liars) & set(range(1, threshold + 1)):
        assert decoded.bad_xs == () and decoded.attempts == 1
    elif 2 * len(liars) <= m + 1 - threshold:
        assert decoded.attributable and set(decoded.bad_xs) == set(liars)


def test_liars_beyond_the_bound_can_frame_honest_holders_but_blame_is_then_not_attributable() -> None:
    """Found by the property above (m = 7, t = 5, liars at 1 and 5 each off by +1): another degree-4
    polynomial with the same secret passes through the two wrong shares and three right ones, so the
    decoder's polynomial disagrees with the honest shares at 3 and 7. 2e = 4 > m + 1 - t = 3, and the
    decoder says so: the blame is not attributable, so the gateway names no one (unmask.py `_blame`)."""
    secret = bytes(32)
    shares = shamir.split(secret, threshold=5, xs=range(1, 8), rng_bytes=deterministic_rng(b"\x00"))
    received = dict(shares)
    for x in (1, 5):
        received[x] = (shares[x] + 1) % shamir.PRIME
    decoded = shamir.robust_reconstruct(received, threshold=5, check=lambda s: s == secret)
    assert decoded.secret == secret
    assert not decoded.attributable


def test_wrong_shares_whose_errors_cancel_at_zero_give_the_secret_and_no_blame() -> None:
    """Found by hypothesis (t = 3, m = 6): +1 on the shares at x = 1 and x = 2 cancels in the Lagrange
    interpolation at 0 (weights 3 and -3), so the t lowest shares still reconstruct the checked secret."""
    secret = bytes(32)
    shares = shamir.split(secret, threshold=3, xs=range(1, 7), rng_bytes=deterministic_rng(b"\x00"))
    received = {x: (v + 1) % shamir.PRIME if x in (1, 2) else v for x, v in shares.items()}
    decoded = shamir.robust_reconstruct(received, threshold=3, check=lambda s: s == secret)
    assert decoded.secret == secret and decoded.bad_xs == () and decoded.attempts == 1
