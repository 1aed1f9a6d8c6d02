"""Shamir secret sharing over the prime field GF(2^521 - 1).

Secrets are 32-byte strings (self-mask seed b_u, X25519 private key s_sk), read as big-endian integers
(< 2^256 < p). A random polynomial of degree t-1 with the secret as constant term is evaluated at the
holders' x-coordinates (their 1-based roster indices). Any t points determine the polynomial (Lagrange
interpolation at 0); any t-1 points are consistent with every secret, each with exactly one polynomial,
so they reveal nothing. Coefficients are drawn uniformly by rejection sampling from injected randomness.

Shamir sharing alone is not verifiable: one holder that sends y + λ⁻¹ (λ its Lagrange coefficient)
shifts the reconstructed secret by one. `robust_reconstruct` therefore takes a `check` that recognises
the right secret (a commitment to the self-mask seed, the advertised public key for s_sk) and searches
t-subsets of the shares until the check passes (docs/secure-aggregation.md, "Verifiable unmasking").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations

PRIME = (1 << 521) - 1  # Mersenne prime M521
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def split(
    secret: bytes, *, threshold: int, xs: Iterable[int], rng_bytes: Callable[[int], bytes]
) -> dict[int, int]:
    """Share a 32-byte secret: returns {x: f(x)} for each holder x in `xs` (distinct, in 1..p-1)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError("secret must be 32 bytes")
    points = list(xs)
    if threshold < 1 or threshold > len(points):
        raise ValueError("need 1 <= threshold <= number of holders")
    if len(set(points)) != len(points) or any(not 0 < x < PRIME for x in points):
        raise ValueError("x-coordinates must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [random_element(rng_bytes) for _ in range(threshold - 1)]
    return {x: evaluate(coefficients, x) for x in points}


def reconstruct(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """Recover the 32-byte secret from at least `threshold` shares {x: y} (uses the `threshold` lowest x).

    Raises ValueError if there are too few shares or the interpolated value is not a 32-byte secret
    (which also catches many corrupted shares).
    """
    if threshold < 1 or len(shares) < threshold:
        raise ValueError("not enough shares")
    chosen = sorted(shares.items())[:threshold]
    value = interpolate_at_zero(chosen)
    if value >= 1 << (8 * SECRET_BYTES):
        raise ValueError("shares do not interpolate to a valid secret")
    return value.to_bytes(SECRET_BYTES, "big")


def interpolate_at_zero(points: list[tuple[int, int]]) -> int:
    """Lagrange interpolation at x = 0 of the polynomial through `points`, mod PRIME."""
    return interpolate_at(points, 0)


def interpolate_at(points: list[tuple[int, int]], at: int) -> int:
    """Value at x = `at` of the polynomial of degree < len(points) through `points`, mod PRIME.

    The x-coordinates must be distinct and non-zero (0 is where secrets live)."""
    xs = [x % PRIME for x, _ in points]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise ValueError("x-coordinates must be distinct and non-zero")
    total = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if j != i:
                numerator = numerator * (x_j - at) % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        total = (total + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


MAX_DECODE_ATTEMPTS = 4096  # t-subsets tried per secret before giving up (bounds the gateway's work)


@dataclass(frozen=True)
class Decoded:
    """Result of `robust_reconstruct`.

    secret: the 32-byte secret that passed the check. bad_xs: x-coordinates whose share is off the
    polynomial the secret was recovered from. attributable: True when that polynomial is certainly
    the dealt one unless at least `m + 2 - t - len(bad_xs)` of the m share senders collude (Reed-Solomon
    unique decoding with the checked secret as one more known point), so `bad_xs` may be named as
    senders of wrong shares; False when the bad shares are too many to tell who sent them.
    attempts: t-subsets interpolated.
    """

    secret: bytes
    bad_xs: tuple[int, ...]
    attributable: bool
    attempts: int


def robust_reconstruct(
    shares: Mapping[int, int],
    *,
    threshold: int,
    check: Callable[[bytes], bool],
    max_attempts: int = MAX_DECODE_ATTEMPTS,
) -> Decoded:
    """Recover the secret from shares {x: y} of which some may be wrong, with `check` as the oracle.

    Tries t-subsets in order of how many of the lowest points they leave out (first the t lowest, then
    every subset of the t + 1 lowest, ...), so e wrong shares among the lowest cost about C(t + e, e)
    interpolations. The first candidate that is a valid 32-byte secret and passes `check` wins. If it
    came from the t lowest shares (the honest case, one interpolation) the other shares are not looked
    at; otherwise every share is compared with the recovered polynomial. Raises ValueError when fewer
    than t shares arrived, when every share lies on one polynomial whose secret fails the check (the
    owner's check value itself is false, or at least m - t + 1 senders colluded), or when no subset
    passes within `max_attempts` interpolations (fewer than t right shares).
    """
    if threshold < 1 or len(shares) < threshold:
        raise ValueError("not enough shares")
    points = sorted(shares.items())
    xs = [x for x, _ in points]
    m, attempts = len(points), 0
    for extra in range(m - threshold + 1):
        window = points[: threshold + extra]
        # new subsets at this level keep the window's last point and leave out `extra` of the others
        for left_out in combinations(range(threshold + extra - 1), extra):
            subset = [p for i, p in enumerate(window) if i not in left_out]
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(f"no {threshold} shares passed the check in {max_attempts} attempts")
            value = interpolate_at_zero(subset)
            if value >> (8 * SECRET_BYTES) == 0 and check(value.to_bytes(SECRET_BYTES, "big")):
                if extra == 0:  # the honest case: the t lowest shares are right; the rest are not needed
                    return Decoded(value.to_bytes(SECRET_BYTES, "big"), (), True, attempts)
                coefficients = polynomial_through(subset)
                bad = tuple(x for x, y in points if evaluate(coefficients, x) != y)
                return Decoded(
                    value.to_bytes(SECRET_BYTES, "big"), bad, 2 * len(bad) <= m + 1 - threshold, attempts
                )
            if extra == 0 and m > threshold:
                coefficients = polynomial_through(subset)
                if all(evaluate(coefficients, x) == y for x, y in points):
                    raise ValueError("all shares agree on a secret that fails the check")
    raise ValueError(f"no {threshold} of the {m} shares at {xs} pass the check")


def polynomial_through(points: list[tuple[int, int]]) -> list[int]:
    """Coefficients (constant first) of the polynomial of degree < len(points) through `points`, mod
    PRIME: O(t²) multiplications and t inversions (Lagrange basis from the master polynomial)."""
    xs = [x % PRIME for x, _ in points]
    if len(set(xs)) != len(xs):
        raise ValueError("x-coordinates must be distinct")
    master = [1]  # Π (x - x_i), constant first
    for x_i in xs:
        grown = [0] * (len(master) + 1)
        for j, a in enumerate(master):
            grown[j] = (grown[j] - x_i * a) % PRIME
            grown[j + 1] = (grown[j + 1] + a) % PRIME
        master = grown
    result = [0] * len(points)
    for x_i, (_, y_i) in zip(xs, points, strict=True):
        # basis numerator: master / (x - x_i) by synthetic division (highest degree first)
        quotient, carry = [0] * len(points), 0
        for j in range(len(master) - 1, 0, -1):
            carry = (master[j] + carry * x_i) % PRIME
            quotient[j - 1] = carry
        denominator = evaluate(quotient, x_i)
        factor = y_i * pow(denominator, -1, PRIME) % PRIME
        for j, q in enumerate(quotient):
            result[j] = (result[j] + factor * q) % PRIME
    return result


def evaluate(coefficients: list[int], x: int) -> int:
    """Horner evaluation of sum(c_i x^i) mod PRIME."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def random_element(rng_bytes: Callable[[int], bytes]) -> int:
    """Uniform element of GF(PRIME) by rejection sampling 521-bit strings."""
    while True:
        value = int.from_bytes(rng_bytes(SHARE_BYTES), "big") & PRIME
        if value < PRIME:
            return value


def share_to_bytes(value: int) -> bytes:
    """Fixed-width big-endian encoding of a field element (66 bytes)."""
    if not 0 <= value < PRIME:
        raise ValueError("share out of field range")
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Inverse of `share_to_bytes`; raises ValueError on a wrong length or out-of-range value."""
    if len(data) != SHARE_BYTES:
        raise ValueError("share must be 66 bytes")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share out of field range")
    return value
