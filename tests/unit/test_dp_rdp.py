"""RDP math against independent references: dp-accounting, numerical integration, exact Skellam divergence."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy import integrate, special, stats

from fl_protocol.dp import rdp
from fl_protocol.dp.accountant import RdpAccountant
from fl_protocol.errors import ConfigError

# (noise_multiplier, sample_rate, steps, delta): small / large ε, tiny / full sampling
SETTINGS = [
    (1.1, 0.01, 1000, 1e-5),
    (0.8, 0.004, 5000, 1e-6),
    (2.0, 0.3, 50, 1e-5),
    (0.5, 0.001, 10000, 1e-5),
    (5.0, 1.0, 10, 1e-5),
    (1.0, 1.0, 1, 1e-5),
    (4.0, 0.05, 200, 1e-7),
]


def _reference_epsilon(sigma: float, q: float, steps: int, delta: float, orders: list[float]) -> float:
    event = dp_accounting.GaussianDpEvent(sigma)
    if q < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    ref = dp_accounting.rdp.RdpAccountant(orders=orders)
    ref.compose(event, steps)
    return float(ref.get_epsilon(delta))


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), SETTINGS)
def test_accountant_within_one_percent_of_dp_accounting(
    sigma: float, q: float, steps: int, delta: float
) -> None:
    ours = RdpAccountant()
    ours.step(noise_multiplier=sigma, sample_rate=q, steps=steps)
    eps = ours.get_epsilon(delta=delta)
    # same orders: both compute the same quantity, so agreement must be far better than 1 %
    assert eps == pytest.approx(
        _reference_epsilon(sigma, q, steps, delta, list(rdp.DEFAULT_ORDERS)), rel=1e-3
    )
    # dp-accounting's own default orders: our grid is at least as good, within 1 %
    default = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.GaussianDpEvent(sigma)
    default.compose(dp_accounting.PoissonSampledDpEvent(q, event) if q < 1 else event, steps)
    assert eps == pytest.approx(default.get_epsilon(delta), rel=0.01)


@pytest.mark.parametrize(
    ("q", "sigma", "order"),
    [(0.3, 2.0, 1.5), (0.05, 0.7, 1.3), (0.6, 0.9, 2.5), (0.01, 1.1, 3.5), (0.2, 1.0, 7.0)],
)
def test_subsampled_gaussian_matches_numerical_integral(q: float, sigma: float, order: float) -> None:
    # A_α = E_{z~N(0,σ²)} [((1-q) + q exp((2z-1)/(2σ²)))^α], integrated directly (Mironov-Talwar-Zhang eq.)
    def integrand(z: float) -> float:
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma**2))
        return float(np.exp(stats.norm.logpdf(z, 0, sigma) + order * log_ratio))

    lo, hi = -40 * sigma, order + 40 * sigma
    value, _ = integrate.quad(integrand, lo, hi, epsabs=0, epsrel=1e-12, limit=800, points=[0.5, order])
    expected = math.log(value) / (order - 1)
    got = rdp.subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=(order,))[0]
    assert got == pytest.approx(expected, rel=1e-6)
    assert got >= expected * (1 - 1e-9)  # never below the true value beyond round-off


def test_gaussian_rdp_formula_and_edge_rates() -> None:
    orders = (1.5, 2.0, 10.0)
    np.testing.assert_allclose(rdp.gaussian_rdp(noise_multiplier=2.0, orders=orders), np.array(orders) / 8.0)
    full = rdp.subsampled_gaussian_rdp(noise_multiplier=2.0, sample_rate=1.0, orders=orders)
    np.testing.assert_allclose(full, np.array(orders) / 8.0)
    assert np.all(rdp.subsampled_gaussian_rdp(noise_multiplier=2.0, sample_rate=0.0, orders=orders) == 0)


def _exact_skellam_divergence(variance: float, shift: int, order: int) -> float:
    """D_α(Sk(μ) + shift ‖ Sk(μ)) from the exact pmf.

    P(k) = e^{-μ} I_|k|(μ) for Poisson(μ/2) − Poisson(μ/2); tails beyond 60 std are negligible.
    """
    half_width = int(60 * math.sqrt(variance) + 60 + 4 * shift)
    k = np.arange(-half_width, half_width + 1)
    with np.errstate(divide="ignore"):
        log_p = np.log(special.ive(np.abs(k), variance))
        log_q = np.log(special.ive(np.abs(k - shift), variance))
    ok = np.isfinite(log_p) & np.isfinite(log_q)
    terms = order * log_q[ok] + (1 - order) * log_p[ok]
    top = terms.max()
    return float((top + math.log(np.exp(terms - top).sum())) / (order - 1))


@pytest.mark.parametrize("variance", [2.0, 10.0, 60.0, 400.0])
@pytest.mark.parametrize("shift", [1, 3])
def test_skellam_bound_dominates_exact_divergence_and_is_tight(variance: float, shift: int) -> None:
    orders = (2.0, 4.0, 8.0, 16.0)
    bound = rdp.skellam_rdp(variance=variance, l1_sensitivity=shift, l2_sensitivity=shift, orders=orders)
    exact = np.array([_exact_skellam_divergence(variance, shift, int(a)) for a in orders])
    assert np.all(bound >= exact)
    if variance >= 60.0:  # the discreteness surcharge vanishes as μ grows: tight within 25 % at α ≤ 16
        assert np.all(bound <= 1.25 * exact)


def test_skellam_bound_multidimensional_shift() -> None:
    # product distribution: exact divergence is the sum over coordinates; Δ1 = Σ|s_i|, Δ2 = ||s||_2
    shifts, variance, order = [1, 2, 1, 3], 80.0, 6
    exact = sum(_exact_skellam_divergence(variance, s, order) for s in shifts)
    l1, l2 = float(sum(shifts)), math.sqrt(sum(s * s for s in shifts))
    bound = rdp.skellam_rdp(variance=variance, l1_sensitivity=l1, l2_sensitivity=l2, orders=(float(order),))[
        0
    ]
    assert exact <= bound <= 1.3 * exact


def test_skellam_fractional_orders_are_not_claimed() -> None:
    curve = rdp.skellam_rdp(variance=10.0, l1_sensitivity=1, l2_sensitivity=1, orders=(1.5, 2.0))
    assert math.isinf(curve[0]) and math.isfinite(curve[1])


@pytest.mark.parametrize(("sigma", "q"), [(1.5, 0.05), (0.8, 0.01), (3.0, 0.3), (1.0, 0.001)])
def test_generic_subsampling_bound_is_valid_and_amplifies(sigma: float, q: float) -> None:
    # Zhu-Wang's general bound applied to the Gaussian curve can never beat the tight subsampled value.
    orders = tuple(float(a) for a in range(2, 40))
    tight = rdp.subsampled_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)
    general = rdp.poisson_subsampled_rdp(
        lambda o: rdp.gaussian_rdp(noise_multiplier=sigma, orders=o), sample_rate=q, orders=orders
    )
    assert np.all(general >= tight * (1 - 1e-9))  # equal at α = 2 up to round-off
    assert np.all(general < rdp.gaussian_rdp(noise_multiplier=sigma, orders=orders))


def test_conversion_is_the_improved_bound() -> None:
    rho, order, delta = 0.5, 10.0, 1e-5
    eps, best = rdp.rdp_to_epsilon([rho], delta=delta, orders=(order,))
    classic = rho + math.log(1 / delta) / (order - 1)
    expected = rho + math.log((order - 1) / order) - (math.log(delta) + math.log(order)) / (order - 1)
    assert best == order and eps == pytest.approx(expected) and eps < classic


@pytest.mark.parametrize("bad", [{"delta": 0.0}, {"delta": 1.0}, {"delta": float("nan")}])
def test_conversion_rejects_bad_delta(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"delta must lie in \(0, 1\)"):
        rdp.rdp_to_epsilon([1.0], orders=(2.0,), **bad)


def test_invalid_parameters_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="noise_multiplier must be a finite number > 0"):
        rdp.gaussian_rdp(noise_multiplier=0.0)
    with pytest.raises(ConfigError, match=r"sample_rate must lie in \[0, 1\]"):
        rdp.subsampled_gaussian_rdp(noise_multiplier=1.0, sample_rate=1.5)
    with pytest.raises(ConfigError, match="orders must be a non-empty sequence of finite numbers > 1"):
        rdp.gaussian_rdp(noise_multiplier=1.0, orders=(1.0,))


def test_tiny_sampling_rate_never_reports_zero() -> None:
    """Issue 11 finding 8: z = 0.5, q = 1e-9, 10^12 steps gave ε = 0.0 (the per-step RDP rounded to 0);
    dp-accounting reports 0.947. Every order's RDP must stay > 0 and ε must not be below the true bound."""
    curve = rdp.subsampled_gaussian_rdp(noise_multiplier=0.5, sample_rate=1e-9)
    assert np.all(curve > 0)
    epsilon, _ = rdp.rdp_to_epsilon(curve * 1e12, delta=1e-5)
    assert 0.947 <= epsilon <= 1.2
    skellam = rdp.poisson_subsampled_rdp(
        lambda orders: rdp.skellam_rdp(variance=4.0, l1_sensitivity=2.0, l2_sensitivity=1.0, orders=orders),
        sample_rate=1e-9,
    )
    finite = skellam[np.isfinite(skellam)]
    assert np.all(finite > 0)


def test_tiny_sampling_rate_matches_dp_accounting() -> None:
    dp_accounting = pytest.importorskip("dp_accounting")
    ours = RdpAccountant()
    ours.step(noise_multiplier=0.8, sample_rate=1e-6, steps=10**8)
    reference = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(1e-6, dp_accounting.GaussianDpEvent(0.8))
    reference.compose(dp_accounting.SelfComposedDpEvent(event, 10**8))
    theirs = reference.get_epsilon(1e-5)
    assert theirs * 0.98 <= ours.get_epsilon(delta=1e-5) <= theirs * 1.1
