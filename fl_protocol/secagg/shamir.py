"""Shamir secret sharing over the prime field GF(2^521 - 1).

Secrets are 32-byte strings (self-mask seed b_u, X25519 private key s_sk), read as big-endian integers
(< 2^256 < p). A random polynomial of degree t-1 with the secret as constant term is evaluated at the
holders' x-coordinates (their 1-based roster indices). Any t points determine the polynomial (Lagrange
interpolation at 0); any t-1 points are consistent with every secret, each with exactly one polynomial,
so they reveal nothing. Coefficients are drawn uniformly by rejection sampling from injected randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

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
    xs = [x % PRIME for x, _ in points]
    if len(set(xs)) != len(xs) or 0 in xs:
        raise ValueError("x-coordinates must be distinct and non-zero")
    total = 0
    for i, (x_i, y_i) in enumerate(points):
        numerator, denominator = 1, 1
        for j, x_j in enumerate(xs):
            if j != i:
                numerator = numerator * x_j % PRIME
                denominator = denominator * (x_j - x_i) % PRIME
        total = (total + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


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
