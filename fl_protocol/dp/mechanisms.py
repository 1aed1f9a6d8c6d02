"""Distributed DP noise: each device adds a share so that the cohort sum carries the target noise.

Two mechanisms (docs/privacy.md):

- Distributed Skellam, integer domain ([AKL21] N. Agarwal, P. Kairouz, Z. Liu, "The Skellam Mechanism
  for Differentially Private Federated Learning", NeurIPS 2021). Skellam(μ) = Poisson(μ/2) − Poisson(μ/2)
  has variance μ and is closed under summation, so n devices each adding Skellam(μ / min_survivors) give a
  sum of at least Skellam(μ) whenever at least `min_survivors` of them survive. The noise is an integer and
  rides through the modular secure sum exactly.
- Distributed discrete Gaussian, integer domain ([KLS21] P. Kairouz, Z. Liu, T. Steinke, ICML 2021): each
  device adds N_Z(0, (z C s)² / min_survivors) per coordinate after rounding; the sum of at least
  `min_survivors` shares has variance ≥ (z C s)². (An earlier version added float Gaussian noise before the
  q-bit clamp, which clamped most of it away: the noise of both mechanisms now never passes the clamp.)

Randomness is injected (`rng: np.random.Generator`). Production passes `secure_generator()`, a generator
seeded with 256 bits from the OS CSPRNG (`os.urandom`), fresh per process and never logged or shared;
tests pass a seeded generator. The noise must be unpredictable to the aggregators, not to the device.
"""

from __future__ import annotations

import math
import os

import numpy as np

from fl_protocol.errors import ConfigError

# numpy's Poisson sampler refuses means above ~9.2e18; stay well below so int64 sums cannot overflow.
MAX_POISSON_MEAN = 1e15


def secure_generator() -> np.random.Generator:
    """A numpy generator seeded with 256 bits from the OS CSPRNG; what production passes as `rng`."""
    seed = int.from_bytes(os.urandom(32), "big")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"size must be an int >= 0, got {size!r}")


def _check_min_survivors(min_survivors: int) -> None:
    if isinstance(min_survivors, bool) or not isinstance(min_survivors, int) or min_survivors < 1:
        raise ConfigError(f"min_survivors must be an int >= 1, got {min_survivors!r}")


def _check_nonneg(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")


def skellam_noise(size: int, *, variance: float, rng: np.random.Generator) -> np.ndarray:
    """`size` iid symmetric Skellam samples with the given variance (int64): Poisson(v/2) − Poisson(v/2)."""
    _check_size(size)
    _check_nonneg("variance", variance)
    if variance / 2.0 > MAX_POISSON_MEAN:
        raise ConfigError(f"Skellam variance {variance} is too large to sample exactly")
    if variance == 0.0:
        return np.zeros(size, dtype=np.int64)
    half = variance / 2.0
    return rng.poisson(half, size).astype(np.int64) - rng.poisson(half, size).astype(np.int64)


def distributed_skellam_share(
    size: int, *, central_variance: float, min_survivors: int, rng: np.random.Generator
) -> np.ndarray:
    """One device's Skellam share: variance `central_variance / min_survivors` per coordinate (int64).

    The sum of k ≥ min_survivors independent shares is Skellam with variance k·μ/min_survivors ≥ μ, so
    the cohort sum is at least as private as the central Skellam mechanism with variance μ.
    """
    _check_min_survivors(min_survivors)
    _check_nonneg("central_variance", central_variance)
    return skellam_noise(size, variance=central_variance / min_survivors, rng=rng)


def discrete_gaussian_noise(size: int, *, stddev: float, rng: np.random.Generator) -> np.ndarray:
    """`size` iid discrete Gaussian samples N_Z(0, σ²) (int64): P(x) ∝ exp(−x² / (2σ²)) on the integers.

    Rejection sampling from the discrete Laplace of scale t = ⌊σ⌋ + 1, accepting y with probability
    exp(−(|y| − σ²/t)² / (2σ²)) (C. Canonne, G. Kamath, T. Steinke, "The Discrete Gaussian for
    Differential Privacy", NeurIPS 2020, Algorithm 3), vectorised and in floating point (the paper's
    exact-arithmetic version avoids floating-point side channels; the acceptance rate is ≥ ~0.4).
    The discrete Laplace is the difference of two iid geometric variables on {0, 1, ...}.
    """
    _check_size(size)
    _check_nonneg("stddev", stddev)
    if stddev == 0.0:
        return np.zeros(size, dtype=np.int64)
    if stddev**2 > MAX_POISSON_MEAN:
        raise ConfigError(f"discrete Gaussian stddev {stddev} is too large to sample exactly")
    t = math.floor(stddev) + 1.0
    p_geometric = -math.expm1(-1.0 / t)
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        want = max(16, int((size - filled) * 2.5))
        y = (rng.geometric(p_geometric, want) - rng.geometric(p_geometric, want)).astype(np.int64)
        accept = np.exp(-((np.abs(y) - stddev**2 / t) ** 2) / (2.0 * stddev**2))
        kept = y[rng.random(want) < accept][: size - filled]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out


def distributed_discrete_gaussian_share(
    size: int, *, central_variance: float, min_survivors: int, rng: np.random.Generator
) -> np.ndarray:
    """One device's discrete Gaussian share: N_Z(0, central_variance / min_survivors) per coordinate.

    Added in the integer domain after clipping and conditional rounding (never before the q-bit clamp),
    so the noise reaches the sum untouched. The sum of k ≥ min_survivors shares has variance
    ≥ central_variance (up to the discrete Gaussian's variance deficit, < 1e-6 relative for σ ≥ 1);
    its privacy is [KLS21] (`rdp.distributed_discrete_gaussian_rdp`), not the continuous Gaussian's.
    """
    _check_min_survivors(min_survivors)
    _check_nonneg("central_variance", central_variance)
    return discrete_gaussian_noise(size, stddev=math.sqrt(central_variance / min_survivors), rng=rng)


def skellam_central_variance(*, noise_multiplier: float, clip_norm: float, scale: float) -> float:
    """Target variance of the summed noise (Skellam or discrete Gaussian) in integer units: (z · C · s)².

    `scale` s is the quantization scale (integer units per float unit), so z·C float noise std becomes
    z·C·s integer units: the same noise-to-signal ratio as the Gaussian with noise multiplier z.
    """
    for name, value in (("noise_multiplier", noise_multiplier), ("clip_norm", clip_norm), ("scale", scale)):
        _check_nonneg(name, value)
    return (noise_multiplier * clip_norm * scale) ** 2


def skellam_device_variance(
    *, noise_multiplier: float, clip_norm: float, scale: float, min_survivors: int
) -> float:
    """Per-device Skellam variance from the round settings: (z · C · s)² / min_survivors."""
    _check_min_survivors(min_survivors)
    central = skellam_central_variance(noise_multiplier=noise_multiplier, clip_norm=clip_norm, scale=scale)
    return central / min_survivors


# β of the conditional-rounding bound (AKL21 §4 uses e^-0.5): the probability that one unconditional
# stochastic rounding exceeds the bound, so the encoder re-rounds about 1/(1-β) ≈ 2.5 times on average
# in the worst case. The device's encoder and the cloud's accountant must use the same value.
ROUNDING_BETA = math.exp(-0.5)


def rounded_l2_bound(*, clip_norm: float, scale: float, dim: int, beta: float) -> float:
    """L2 sensitivity (integer units) of a clipped, scaled, conditionally rounded update.

    With c = C·s the scaled clip norm and d the dimension, unbiased stochastic rounding gives
    ‖x̃‖² ≤ c² + d/4 + sqrt(2 log(1/β)) (c + sqrt(d)/2) with probability ≥ 1 − β (Kairouz, Liu, Steinke,
    "The Distributed Discrete Gaussian Mechanism", ICML 2021, Section 4.1; used by [AKL21] Section 4).
    Conditional rounding (re-round until the bound holds) makes it deterministic; the encoder must do that
    and refuse otherwise. Deterministically ‖x̃‖ ≤ c + sqrt(d), so the smaller of the two is returned.
    """
    _check_nonneg("clip_norm", clip_norm)
    _check_nonneg("scale", scale)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an int >= 1, got {dim!r}")
    if not (0.0 < beta < 1.0):
        raise ConfigError(f"beta must lie in (0, 1), got {beta!r}")
    c = clip_norm * scale
    probable = c * c + dim / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (c + math.sqrt(dim) / 2.0)
    return math.sqrt(min(probable, (c + math.sqrt(dim)) ** 2))


def rounded_l1_bound(*, l2_bound: float, dim: int) -> float:
    """L1 sensitivity of an integer vector with L2 norm ≤ `l2_bound`: min(Δ2², sqrt(d) Δ2).

    Each non-zero integer coordinate has |x_i| ≤ x_i², so ‖x‖₁ ≤ ‖x‖₂²; Cauchy–Schwarz gives sqrt(d)‖x‖₂.
    """
    _check_nonneg("l2_bound", l2_bound)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dim must be an int >= 1, got {dim!r}")
    return min(l2_bound**2, math.sqrt(dim) * l2_bound)
