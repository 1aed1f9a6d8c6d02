"""Differential privacy for fedlora: RDP math, accountant, calibration, distributed noise, tiers.

See docs/privacy.md for the guarantees. Modules:
- `rdp`: RDP of the Gaussian, Poisson-subsampled Gaussian, Skellam and distributed discrete Gaussian
  mechanisms; RDP → (ε, δ).
- `accountant`: `RdpAccountant`, records events and reports (ε, δ); persists as a JSON-able dict.
- `calibrate`: least noise for a target ε over R rounds (never overshoots).
- `mechanisms`: distributed Skellam / discrete Gaussian noise shares, `secure_generator()`.
- `rounds`: the privacy event of one round's settings (shared by the cloud and the device ledger).
- `tiers`: sensitivity tiers and the device-side refusal rules.
"""

from __future__ import annotations

from fl_protocol.dp.accountant import DiscreteGaussianEvent, GaussianEvent, RdpAccountant, SkellamEvent
from fl_protocol.dp.calibrate import calibrate_noise_multiplier, calibrate_skellam_variance
from fl_protocol.dp.mechanisms import (
    ROUNDING_BETA,
    discrete_gaussian_noise,
    distributed_discrete_gaussian_share,
    distributed_skellam_share,
    rounded_l1_bound,
    rounded_l2_bound,
    secure_generator,
    skellam_central_variance,
    skellam_device_variance,
    skellam_noise,
)
from fl_protocol.dp.rdp import (
    DEFAULT_ORDERS,
    gaussian_rdp,
    poisson_subsampled_rdp,
    rdp_to_epsilon,
    skellam_rdp,
    subsampled_gaussian_rdp,
)
from fl_protocol.dp.tiers import DEFAULT_TIERS, TierConfig, TierPolicy, check_round_against_tier

__all__ = [
    "DEFAULT_ORDERS",
    "DEFAULT_TIERS",
    "DiscreteGaussianEvent",
    "GaussianEvent",
    "RdpAccountant",
    "SkellamEvent",
    "TierConfig",
    "TierPolicy",
    "calibrate_noise_multiplier",
    "calibrate_skellam_variance",
    "check_round_against_tier",
    "discrete_gaussian_noise",
    "distributed_discrete_gaussian_share",
    "distributed_skellam_share",
    "gaussian_rdp",
    "poisson_subsampled_rdp",
    "rdp_to_epsilon",
    "rounded_l1_bound",
    "ROUNDING_BETA",
    "rounded_l2_bound",
    "secure_generator",
    "skellam_central_variance",
    "skellam_device_variance",
    "skellam_noise",
    "skellam_rdp",
    "subsampled_gaussian_rdp",
]
