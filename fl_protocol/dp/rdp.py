"""Rényi differential privacy (RDP) of the mechanisms fedlora uses, and the conversion to (ε, δ).

Pure math, no state. Every function returns one RDP value per order of `orders` (a numpy array), so
composition is addition of arrays and the accountant (`accountant.py`) only keeps events and sums.

Conventions: the neighbouring relation is add/remove of one device (user-level DP-FedAvg). Gaussian
mechanisms are expressed by their noise multiplier z = noise std / L2 sensitivity. Skellam is expressed
in the integer domain by the variance of the summed noise and the integer L1/L2 sensitivities.
An order at which a bound is not available gets +inf, which the conversion simply never picks.

References
- [M17] I. Mironov, "Rényi Differential Privacy", CSF 2017 (Gaussian: Proposition 7; composition:
  Proposition 1; monotonicity in the order: Proposition 9 of Van Erven & Harremoës 2014).
- [MTZ19] I. Mironov, K. Talwar, L. Zhang, "Rényi Differential Privacy of the Sampled Gaussian
  Mechanism", 2019 (integer orders: Section 3.3 eq. for A_α; fractional orders: Section 3.3, the two
  series split at z0 = σ² log(1/q − 1) + 1/2).
- [ZW19] Y. Zhu, Y.-X. Wang, "Poisson Subsampled Rényi Differential Privacy", ICML 2019, Theorem 5
  (general upper bound for any mechanism, integer orders).
- [AKL21] N. Agarwal, P. Kairouz, Z. Liu, "The Skellam Mechanism for Differentially Private Federated
  Learning", NeurIPS 2021, Theorem 3.5 / Corollary 3.6.
- [KLS21] P. Kairouz, Z. Liu, T. Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
  Learning with Secure Aggregation", ICML 2021, Theorem 1.
- [BBGHS20] B. Balle, G. Barthe, M. Gaboardi, J. Hsu, T. Sato, "Hypothesis Testing Interpretations and
  Rényi Differential Privacy", AISTATS 2020, Theorem 21; same bound in [CKS20] C. Canonne, G. Kamath,
  T. Steinke, "The Discrete Gaussian for Differential Privacy", Proposition 12.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from fl_protocol.errors import ConfigError

logger = logging.getLogger(__name__)

#: Default Rényi orders: dense near 1 (large ε regimes), integers up to 64, then sparse up to 1024
#: (tiny ε regimes). Fractional orders are used by the Gaussian bounds only; Skellam uses the integers.
DEFAULT_ORDERS: tuple[float, ...] = (
    tuple(1.0 + x / 10.0 for x in range(1, 10))
    + (2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 4.5)
    + tuple(float(a) for a in range(5, 65))
    + (80.0, 96.0, 128.0, 160.0, 192.0, 256.0, 384.0, 512.0, 768.0, 1024.0)
)

_LOG_HALF = math.log(0.5)
_MAX_SERIES_TERMS = 1 << 18  # fractional-order series: above this we fall back to the ceiling order
# a fractional-order log A_α below this is dominated by round-off of its signed series (terms ~1)
_FRACTIONAL_FLOOR = 1e-12


def _orders_array(orders: Sequence[float]) -> np.ndarray:
    arr = np.asarray(orders, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 1.0):
        raise ConfigError("orders must be a non-empty sequence of finite numbers > 1")
    return arr


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _check_rate(sample_rate: float) -> None:
    if not (math.isfinite(sample_rate) and 0.0 <= sample_rate <= 1.0):
        raise ConfigError(f"sample_rate must lie in [0, 1], got {sample_rate!r}")


def _is_integer(order: float) -> bool:
    return float(order).is_integer()


def gaussian_rdp(*, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP of one release of the Gaussian mechanism: ε(α) = α / (2 z²) ([M17] Proposition 7).

    `noise_multiplier` z is the noise std divided by the L2 sensitivity (the clip norm for DP-FedAvg).
    """
    _check_positive("noise_multiplier", noise_multiplier)
    return _orders_array(orders) / (2.0 * noise_multiplier**2)


def _log_a_integer(order: int, sample_rate: float, noise_multiplier: float) -> float:
    """log A_α for integer α ([MTZ19] Section 3.3), as log1p of A_α − 1 so tiny q never rounds to 0:

    A_α = Σ_{k=0}^{α} C(α,k) (1−q)^{α−k} q^k exp((k² − k) / (2σ²)). The binomial weights sum to 1 and
    the k = 0, 1 terms have exp(0) = 1, so
    A_α − 1 = Σ_{k=2}^{α} C(α,k) (1−q)^{α−k} q^k (e^{(k²−k)/(2σ²)} − 1), a sum of positive terms, taken
    as a log-sum-exp. (The direct sum loses A_α − 1 ~ q² below 1e-16.)
    """
    k = np.arange(2, order + 1, dtype=np.float64)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, order + 1, dtype=np.float64)))))
    log_binom = log_fact[order] - log_fact[2:] - log_fact[order - 2 :: -1]
    exponent = (k * k - k) / (2.0 * noise_multiplier**2)
    log_expm1 = np.array([_log_expm1(float(x)) for x in exponent])
    terms = log_binom + (order - k) * math.log1p(-sample_rate) + k * math.log(sample_rate) + log_expm1
    top = float(np.max(terms))
    log_am1 = top + math.log(float(np.sum(np.exp(terms - top))))
    return _log1p_exp(log_am1)


def _log1p_exp(x: float) -> float:
    """log(1 + e^x) without overflow for large x or loss for very negative x."""
    return x + math.log1p(math.exp(-x)) if x > 0.0 else math.log1p(math.exp(x))


def _log_erfc(x: np.ndarray) -> np.ndarray:
    """log(erfc(x)) elementwise, accurate where erfc underflows (asymptotic series for x ≥ 20)."""
    out = np.empty_like(x)
    small = x < 20.0
    out[small] = np.log([math.erfc(v) for v in x[small]])
    big = x[~small]
    inv2 = 1.0 / (big * big)
    series = 1.0 - 0.5 * inv2 + 0.75 * inv2**2 - 1.875 * inv2**3
    out[~small] = -big * big - np.log(big) - 0.5 * math.log(math.pi) + np.log(series)
    return out


def _log_a_fractional_terms(order: float, q: float, sigma: float, n_terms: int) -> tuple[float, float, float]:
    """Signed series of [MTZ19] for fractional α, first `n_terms` terms of both sums.

    Returns (log |partial sum|, log |largest of the last terms|, log Σ|terms|); the last two let the
    caller judge convergence and bound the round-off of the signed sum.
    """
    i = np.arange(n_terms, dtype=np.float64)
    j = order - i
    # generalised binomial C(α, i) by the recurrence C(α, i+1) = C(α, i) (α − i) / (i + 1)
    steps = (order - i[:-1]) / (i[:-1] + 1.0)
    log_binom = np.concatenate(([0.0], np.cumsum(np.log(np.abs(steps)))))
    sign = np.concatenate(([1.0], np.cumprod(np.sign(steps))))
    log_q, log_1mq = math.log(q), math.log1p(-q)
    z0 = sigma**2 * (log_1mq - log_q) + 0.5  # σ² log(1/q − 1) + 1/2, without overflow for tiny q
    two_var = 2.0 * sigma**2
    root2_sigma = math.sqrt(2.0) * sigma
    t1 = log_binom + i * log_q + j * log_1mq + (i * i - i) / two_var
    t1 += _LOG_HALF + _log_erfc((i - z0) / root2_sigma)
    t2 = log_binom + j * log_q + i * log_1mq + (j * j - j) / two_var
    t2 += _LOG_HALF + _log_erfc((z0 - j) / root2_sigma)
    terms = np.concatenate((t1, t2))
    signs = np.concatenate((sign, sign))
    top = float(np.max(terms))
    scaled = np.exp(terms - top)
    total = float(np.sum(signs * scaled))
    log_abs_sum = top + math.log(float(np.sum(scaled)))
    tail = max(float(t1[-1]), float(t2[-1]))
    if not (total > 0.0 and math.isfinite(top)):
        return math.inf, tail, log_abs_sum  # numerically unusable: caller falls back
    return top + math.log(total), tail, log_abs_sum


def _log_expm1(x: float) -> float:
    return x if x > 40.0 else math.log(math.expm1(x))


def _log_a_fractional(order: float, sample_rate: float, noise_multiplier: float) -> float:
    """log A_α for fractional α ([MTZ19] Section 3.3), as an upper bound.

    The number of terms is quadrupled until the last term is below e^-20 of A_α − 1 (the part of A_α
    that carries ε) or below 1e-14 of A_α (double precision). For i > α the terms alternate in sign with
    shrinking magnitude, so the truncated remainder is at most the last term: twice that, plus a bound on
    the round-off of the signed sum, is added. If the series does not settle, the bound of the next
    integer order is used, valid because RDP is non-decreasing in α.
    """
    n_terms = 256
    while n_terms <= _MAX_SERIES_TERMS:
        log_a, tail, log_abs_sum = _log_a_fractional_terms(order, sample_rate, noise_multiplier, n_terms)
        if math.isfinite(log_a):
            wanted = max(_log_expm1(log_a) - 20.0, log_a - 32.0) if log_a > 0.0 else log_a - 32.0
            if tail + math.log(2.0) <= wanted:
                roundoff = math.log(4.0 * (math.log2(2 * n_terms) + 2.0) * 2.0**-52) + log_abs_sum
                slack = float(np.logaddexp(math.log(2.0) + tail, roundoff))
                return log_a + math.log1p(math.exp(slack - log_a))
        n_terms *= 4
    ceil_order = math.ceil(order)
    logger.debug("fractional RDP series did not converge at order %s; using order %s", order, ceil_order)
    return _log_a_integer(ceil_order, sample_rate, noise_multiplier) * (order - 1.0) / (ceil_order - 1.0)


def subsampled_gaussian_rdp(
    *, noise_multiplier: float, sample_rate: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of the Poisson-subsampled Gaussian mechanism, tight for integer and fractional orders.

    ε(α) = log(A_α) / (α − 1), A_α = E_{z∼N(0,σ²)}[((1−q) + q·exp((2z − 1)/(2σ²)))^α] ([MTZ19] Theorem 4
    and Section 3.3), computed in log space. Each device is included independently with probability
    `sample_rate` q (Poisson sampling of the cohort); q = 1 reduces to `gaussian_rdp`, q = 0 to zero.
    """
    _check_positive("noise_multiplier", noise_multiplier)
    _check_rate(sample_rate)
    arr = _orders_array(orders)
    if sample_rate == 0.0:
        return np.zeros_like(arr)
    if sample_rate == 1.0:
        return gaussian_rdp(noise_multiplier=noise_multiplier, orders=orders)
    out = np.empty_like(arr)
    for idx, order in enumerate(arr):
        if _is_integer(order):
            log_a = _log_a_integer(int(order), sample_rate, noise_multiplier)
        else:
            log_a = _log_a_fractional(float(order), sample_rate, noise_multiplier)
            if not log_a > _FRACTIONAL_FLOOR:  # lost in round-off: use the ceiling order (RDP grows in α)
                ceil_order = math.ceil(order)
                log_a = _log_a_integer(ceil_order, sample_rate, noise_multiplier)
                log_a *= (order - 1.0) / (ceil_order - 1.0)
        out[idx] = log_a / (order - 1.0)
    return out


def skellam_rdp(
    *,
    variance: float,
    l1_sensitivity: float,
    l2_sensitivity: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> np.ndarray:
    """RDP of the multi-dimensional Skellam mechanism ([AKL21] Theorem 3.5, Corollary 3.6).

    Noise: each coordinate gets Poisson(μ/2) − Poisson(μ/2), variance μ = `variance`, in the integer
    domain. Assumptions: the query is integer valued (after scaling and conditional stochastic rounding,
    see `mechanisms.rounded_l2_bound`), with L1 / L2 sensitivities Δ1, Δ2 in integer units; the order α
    is an integer > 1. Then

        ε(α) ≤ α Δ2² / (2μ) + min( ((2α − 1) Δ2² + 6 Δ1) / (4μ²),  3 Δ1 / (2μ) ).

    The first term is the Gaussian RDP at the same variance; the min is the price of discreteness and
    vanishes as μ grows. Non-integer orders get +inf (the theorem does not cover them).
    """
    _check_positive("variance", variance)
    _check_positive("l1_sensitivity", l1_sensitivity)
    _check_positive("l2_sensitivity", l2_sensitivity)
    arr = _orders_array(orders)
    l2_sq = l2_sensitivity**2
    gauss = arr * l2_sq / (2.0 * variance)
    extra = np.minimum(
        ((2.0 * arr - 1.0) * l2_sq + 6.0 * l1_sensitivity) / (4.0 * variance**2),
        3.0 * l1_sensitivity / (2.0 * variance),
    )
    integer = np.array([_is_integer(a) for a in arr])
    return np.where(integer, gauss + extra, np.inf)


#: Most devices whose noise shares a distributed discrete Gaussian sum may hold; only enters the
#: [KLS21] τ term, which is negligible (< 1e-60 for σ ≥ 4) at any realistic cohort size.
DDG_MAX_SUMMANDS = 1 << 32


def distributed_discrete_gaussian_rdp(
    *,
    local_stddev: float,
    min_summands: int,
    l2_sensitivity: float,
    dim: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> np.ndarray:
    """RDP of the distributed discrete Gaussian: the sum of n ≥ `min_summands` device shares, each
    iid discrete Gaussian N_Z(0, σ²) per coordinate, added to an integer query of L2 sensitivity Δ2.

    [KLS21] P. Kairouz, Z. Liu, T. Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
    Learning with Secure Aggregation", ICML 2021, Theorem 1 / Proposition 14: the release is ½ε²-zCDP,
    i.e. RDP ε(α) = α ε² / 2 at every order α > 1, with

        ε = min( sqrt(Δ2² / (nσ²) + 2τd),  Δ2 / (√n σ) + τ √d ),  τ = 10 Σ_{k=1}^{n−1} e^{−2π²σ² k/(k+1)}.

    (The paper's first term has ½τd; 2τd is the larger, conservative reading.) The Δ2² term is largest at
    n = `min_summands`; τ grows with n and is bounded by 10 (N − 1) e^{−π²σ²} with N = DDG_MAX_SUMMANDS,
    so the returned curve holds for every n between the two. σ = `local_stddev`, d = `dim` (integer units).
    """
    _check_positive("local_stddev", local_stddev)
    _check_positive("l2_sensitivity", l2_sensitivity)
    if isinstance(min_summands, bool) or not isinstance(min_summands, int) or min_summands < 1:
        raise ConfigError(f"min_summands must be an int >= 1, got {min_summands!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an int >= 1, got {dim!r}")
    arr = _orders_array(orders)
    log_tau = math.log(10.0 * (DDG_MAX_SUMMANDS - 1)) - math.pi**2 * local_stddev**2
    tau = math.exp(log_tau) if log_tau < 700.0 else math.inf
    gauss_sq = l2_sensitivity**2 / (min_summands * local_stddev**2)
    eps = min(math.sqrt(gauss_sq + 2.0 * tau * dim), math.sqrt(gauss_sq) + tau * math.sqrt(dim))
    return arr * (eps * eps / 2.0)


def poisson_subsampled_rdp(
    rdp_curve: Callable[[Sequence[float]], np.ndarray],
    *,
    sample_rate: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> np.ndarray:
    """Generic Poisson-subsampling amplification for any mechanism ([ZW19] Theorem 5), integer α ≥ 2:

    ε'(α) ≤ 1/(α−1) · log( (1−q)^{α−1} (αq − q + 1) + C(α,2) q² (1−q)^{α−2} e^{ε(2)}
                            + 3 Σ_{l=3}^{α} C(α,l) (1−q)^{α−l} q^l e^{(l−1) ε(l)} ),

    and never more than ε(α) itself. `rdp_curve(orders)` is the un-sampled mechanism's RDP at the given
    orders. Used for Skellam; the Gaussian has the tight `subsampled_gaussian_rdp`. Fractional: +inf.
    """
    _check_rate(sample_rate)
    arr = _orders_array(orders)
    if sample_rate == 0.0:
        return np.zeros_like(arr)
    integer = np.array([_is_integer(a) for a in arr])
    out = np.full_like(arr, np.inf)
    if not np.any(integer):
        return out
    max_alpha = int(np.max(arr[integer]))
    ells = np.arange(2, max_alpha + 1, dtype=np.float64)
    plain = np.asarray(rdp_curve(tuple(ells)), dtype=np.float64)  # plain[l - 2] = ε(l)
    if sample_rate == 1.0:
        out[integer] = plain[arr[integer].astype(int) - 2]
        return out
    q, log_q, log_1mq = sample_rate, math.log(sample_rate), math.log1p(-sample_rate)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, max_alpha + 1, dtype=np.float64)))))
    for idx in np.flatnonzero(integer):
        alpha = int(arr[idx])
        ell = np.arange(2, alpha + 1)
        log_binom = log_fact[alpha] - log_fact[ell] - log_fact[alpha - ell]
        terms = log_binom + (alpha - ell) * log_1mq + ell * log_q + (ell - 1) * plain[ell - 2]
        terms[1:] += math.log(3.0)  # l ≥ 3 carry the factor 3; l = 2 does not
        # the sum is 1 + (first − 1) + Σ terms with first − 1 = expm1(log first) ~ −q²: keep the small
        # parts apart from the 1 so a tiny q does not round the whole bound to 0
        log_first = (alpha - 1) * log_1mq + math.log1p((alpha - 1) * q)
        top = float(np.max(terms))
        log_terms = top + math.log(float(np.sum(np.exp(terms - top))))
        unamplified = float(plain[alpha - 2])
        if log_terms > 30.0:  # the sum is far from 1: plain log-sum-exp is exact enough
            log_sum = float(np.logaddexp(log_first, log_terms))
        else:
            excess = math.expm1(log_first) + math.exp(log_terms)
            if not (math.isfinite(excess) and excess > 0.0):  # round-off: claim no amplification
                out[idx] = unamplified
                continue
            log_sum = math.log1p(excess)
        out[idx] = min(unamplified, log_sum / (alpha - 1))
    return out


def rdp_to_epsilon(
    rdp: Sequence[float] | np.ndarray, *, delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> tuple[float, float]:
    """Smallest ε over the orders such that the composed mechanism is (ε, δ)-DP; returns (ε, best order).

    Uses the improved conversion of [BBGHS20] Theorem 21 ([CKS20] Proposition 12): (α, ρ)-RDP implies
    (ε, δ)-DP with ε = ρ + log((α − 1)/α) − (log δ + log α)/(α − 1), clamped at 0. It is never worse than
    the classic ρ + log(1/δ)/(α − 1) of [M17] Proposition 3. A zero RDP value means no leakage: ε = 0.
    """
    if not (math.isfinite(delta) and 0.0 < delta < 1.0):
        raise ConfigError(f"delta must lie in (0, 1), got {delta!r}")
    arr = _orders_array(orders)
    rho = np.asarray(rdp, dtype=np.float64)
    if rho.shape != arr.shape:
        raise ConfigError(f"rdp has {rho.size} values for {arr.size} orders")
    if np.any(np.isnan(rho)) or np.any(rho < 0):
        raise ConfigError("rdp values must be >= 0 (or +inf)")
    if np.any(rho == 0.0):  # zero divergence at some order: the distributions are identical
        return 0.0, float(arr[int(np.argmax(rho == 0.0))])
    with np.errstate(invalid="ignore"):
        eps = rho + np.log1p(-1.0 / arr) - (math.log(delta) + np.log(arr)) / (arr - 1.0)
    eps = np.where(np.isfinite(rho), eps, np.inf)
    best = int(np.argmin(eps))
    return max(float(eps[best]), 0.0), float(arr[best])
