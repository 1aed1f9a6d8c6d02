"""Noise calibration: the least noise that keeps ε ≤ target over a planned number of rounds.

Bisection on the noise parameter (ε is non-increasing in the noise). The result is always a value at
which ε was evaluated and found ≤ target, so calibration never overshoots the target, whatever the
tolerance; the tolerance only controls how much noise may be wasted (relative gap to the true optimum).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from fl_protocol.dp import rdp
from fl_protocol.errors import ConfigError, PrivacyError

logger = logging.getLogger(__name__)

# search range relative to the starting point (noise multiplier 1, or the L2 sensitivity for Skellam)
_MIN_FACTOR = 1e-3
_MAX_FACTOR = 1e7


def _bisect_least_noise(
    epsilon_of: Callable[[float], float], *, target_epsilon: float, start: float, rel_tolerance: float
) -> float:
    """Least x (within rel_tolerance) with epsilon_of(x) ≤ target, assuming epsilon_of non-increasing."""
    hi = start
    while epsilon_of(hi) > target_epsilon:
        hi *= 2.0
        if hi > start * _MAX_FACTOR:
            raise PrivacyError(f"target ε={target_epsilon} is not reachable with noise ≤ {hi / 2:g}")
    lo = hi / 2.0
    while lo > start * _MIN_FACTOR and epsilon_of(lo) <= target_epsilon:
        hi, lo = lo, lo / 2.0
    if lo <= start * _MIN_FACTOR:
        return hi  # even (almost) no noise meets the target: return the smallest value checked
    while (hi - lo) > rel_tolerance * hi:
        mid = math.sqrt(lo * hi)
        if epsilon_of(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def _check_targets(target_epsilon: float, delta: float, rounds: int, rel_tolerance: float) -> None:
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}")
    if not (0.0 < delta < 1.0):
        raise ConfigError(f"delta must lie in (0, 1), got {delta!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an int >= 1, got {rounds!r}")
    if not (0.0 < rel_tolerance < 1.0):
        raise ConfigError(f"rel_tolerance must lie in (0, 1), got {rel_tolerance!r}")


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    rounds: int,
    orders: Sequence[float] = rdp.DEFAULT_ORDERS,
    rel_tolerance: float = 1e-3,
) -> float:
    """Smallest Gaussian noise multiplier z (to `rel_tolerance`) such that `rounds` releases of the
    Poisson-subsampled Gaussian with `sample_rate` are (ε ≤ target_epsilon, delta)-DP.

    Raises PrivacyError if no noise multiplier up to 1e7 reaches the target. Below 1e-3 the search stops
    (returns the smallest value checked).
    """
    _check_targets(target_epsilon, delta, rounds, rel_tolerance)

    def epsilon_of(noise_multiplier: float) -> float:
        curve = rdp.subsampled_gaussian_rdp(
            noise_multiplier=noise_multiplier, sample_rate=sample_rate, orders=orders
        )
        return rdp.rdp_to_epsilon(curve * rounds, delta=delta, orders=orders)[0]

    z = _bisect_least_noise(epsilon_of, target_epsilon=target_epsilon, start=1.0, rel_tolerance=rel_tolerance)
    logger.debug(
        "calibrated noise_multiplier=%.6g for ε=%g δ=%g q=%g rounds=%d",
        z,
        target_epsilon,
        delta,
        sample_rate,
        rounds,
    )
    return z


def calibrate_skellam_variance(
    *,
    target_epsilon: float,
    delta: float,
    l1_sensitivity: float,
    l2_sensitivity: float,
    rounds: int,
    orders: Sequence[float] = rdp.DEFAULT_ORDERS,
    rel_tolerance: float = 1e-3,
) -> float:
    """Smallest central Skellam variance (integer units, to `rel_tolerance`) such that `rounds`
    releases of the Skellam mechanism with these sensitivities are (ε ≤ target_epsilon, delta)-DP.

    No subsampling amplification is claimed (sample_rate 1), the conservative choice for Skellam.
    """
    _check_targets(target_epsilon, delta, rounds, rel_tolerance)

    def epsilon_of(std: float) -> float:
        curve = rdp.skellam_rdp(
            variance=std * std, l1_sensitivity=l1_sensitivity, l2_sensitivity=l2_sensitivity, orders=orders
        )
        return rdp.rdp_to_epsilon(curve * rounds, delta=delta, orders=orders)[0]

    std = _bisect_least_noise(
        epsilon_of, target_epsilon=target_epsilon, start=max(l2_sensitivity, 1.0), rel_tolerance=rel_tolerance
    )
    return std * std


def calibrate_event_noise(
    rdp_of: Callable[[float], Sequence[float]],
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    orders: Sequence[float] = rdp.DEFAULT_ORDERS,
    rel_tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier z (to `rel_tolerance`) such that `rounds` releases of the mechanism whose
    one-round RDP curve at `orders` is `rdp_of(z)` are (ε ≤ target_epsilon, delta)-DP.

    For mechanisms whose event depends on z through the codec (distributed Skellam and discrete Gaussian,
    fl_protocol.dp.rounds). Never overshoots: the result is a z at which ε was evaluated ≤ target.
    """
    _check_targets(target_epsilon, delta, rounds, rel_tolerance)

    def epsilon_of(noise_multiplier: float) -> float:
        curve = np.asarray(rdp_of(noise_multiplier), dtype=np.float64)
        return rdp.rdp_to_epsilon(curve * rounds, delta=delta, orders=orders)[0]

    return _bisect_least_noise(
        epsilon_of, target_epsilon=target_epsilon, start=1.0, rel_tolerance=rel_tolerance
    )
