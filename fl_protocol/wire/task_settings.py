"""Settings blocks carried inside a RoundTask: training, differential privacy, secure aggregation.

Each is a frozen dataclass validated in `__post_init__` (ConfigError naming the field) with
`to_fields()` / `from_fields()` for the field codec. Codec settings live in fl_protocol.codec.settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS
from fl_protocol.errors import ConfigError
from fl_protocol.wire.checks import check_float, check_int, check_mapping, exact_keys

DP_MECHANISMS = frozenset({"skellam", "gaussian", "none"})
SECAGG_MODES = ("secagg", "trusted")


def _to_fields(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}  # type: ignore[arg-type]


WEIGHTINGS = frozenset({"uniform", "qffl", "datasize"})


@dataclass(frozen=True)
class TrainingSettings:
    """Local training of one round: optimizer steps per device, batch size, local learning rate, weighting.

    weighting: how a device weighs its update in the secure sum (docs/update-codec.md): 'uniform' (w = 1),
    'qffl' (w = min(1, (F_k / weight_reference)^qffl_q) with F_k the global model's loss on the device's
    data: fairness, Li et al. 2020) or 'datasize' (w = min(1, rows_k / weight_reference)). The device sends
    (w·Δ, w); the gateway learns only the sums. Tasks without these fields (older clouds) mean 'uniform'.
    """

    local_steps: int
    batch_size: int
    learning_rate: float
    weighting: str = "uniform"
    qffl_q: float = 1.0
    weight_reference: float = 1.0

    def __post_init__(self) -> None:
        check_int("local_steps", self.local_steps, lo=1, hi=1_000_000)
        check_int("batch_size", self.batch_size, lo=1, hi=1_000_000)
        object.__setattr__(
            self, "learning_rate", check_float("learning_rate", self.learning_rate, lo=0.0, lo_open=True)
        )
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting must be one of {', '.join(sorted(WEIGHTINGS))}")
        object.__setattr__(self, "qffl_q", check_float("qffl_q", self.qffl_q, lo=0.0, hi=100.0))
        reference = check_float("weight_reference", self.weight_reference, lo=0.0, lo_open=True)
        object.__setattr__(self, "weight_reference", reference)

    @property
    def weighted(self) -> bool:
        """True when devices send a weight coordinate with their update."""
        return self.weighting != "uniform"

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return _to_fields(self)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> TrainingSettings:
        """Inverse of `to_fields`; unknown/missing keys or bad values raise ConfigError.

        The weighting fields may be absent together (a task from a cloud that predates them)."""
        base = {"local_steps", "batch_size", "learning_rate"}
        names = {f.name for f in fields(cls)}
        exact_keys("training", check_mapping("training", values), names if "weighting" in values else base)
        return cls(**values)


@dataclass(frozen=True)
class DpSettings:
    """Differential privacy of one round (docs/privacy.md §2-§3).

    mechanism: 'skellam', 'gaussian' (discrete Gaussian; both integer shares after the clamp) or 'none'.
    noise_multiplier: sigma / clip_norm of the cohort's total noise; 0 iff mechanism is 'none'.
    clip_norm: L2 bound C (must equal the codec's clip_norm; RoundTask checks it).
    min_survivors: the total noise reaches its target only if at least this many devices survive.
    target_delta: delta of the (epsilon, delta) guarantee, in (0, 1).
    """

    mechanism: str
    noise_multiplier: float
    clip_norm: float
    min_survivors: int
    target_delta: float

    def __post_init__(self) -> None:
        if self.mechanism not in DP_MECHANISMS:
            raise ConfigError(f"mechanism must be one of {sorted(DP_MECHANISMS)}")
        sigma = check_float("noise_multiplier", self.noise_multiplier, lo=0.0)
        if (sigma == 0.0) != (self.mechanism == "none"):
            raise ConfigError("noise_multiplier must be 0 exactly when mechanism is 'none'")
        object.__setattr__(self, "noise_multiplier", sigma)
        object.__setattr__(self, "clip_norm", check_float("clip_norm", self.clip_norm, lo=0.0, lo_open=True))
        check_int("min_survivors", self.min_survivors, lo=1, hi=1_000_000)
        delta = check_float("target_delta", self.target_delta, lo=0.0, hi=1.0, lo_open=True)
        if delta >= 1.0:
            raise ConfigError("target_delta must be < 1")
        object.__setattr__(self, "target_delta", delta)

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return _to_fields(self)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> DpSettings:
        """Inverse of `to_fields`; unknown/missing keys or bad values raise ConfigError."""
        exact_keys("dp", check_mapping("dp", values), {f.name for f in fields(cls)})
        return cls(**values)


@dataclass(frozen=True)
class SecAggSettings:
    """Secure aggregation (SecAgg+) of one round.

    threshold_fraction: Shamir threshold t as a fraction of the neighbourhood size, in (0, 1].
    neighbour_degree: k of the k-regular neighbour graph; 0 lets the gateway pick k ~ 2 log2 n.
    ring_bits: b of Z_{2^b} (must equal the codec's ring_bits; RoundTask checks it).
    mode: 'secagg' (devices mask, the gateway learns only sums) or 'trusted' (no masking: devices that
    opted in send their encoded update as a PlainUpdate and the gateway applies a per-device robust rule,
    docs/gateway.md "Trusted mode"). A task without the field (older clouds) decodes as 'secagg'.
    """

    threshold_fraction: float
    neighbour_degree: int
    ring_bits: int
    mode: str = "secagg"

    def __post_init__(self) -> None:
        fraction = check_float("threshold_fraction", self.threshold_fraction, lo=0.0, hi=1.0, lo_open=True)
        object.__setattr__(self, "threshold_fraction", fraction)
        check_int("neighbour_degree", self.neighbour_degree, lo=0, hi=1_000_000)
        check_int("ring_bits", self.ring_bits, lo=MIN_RING_BITS, hi=MAX_RING_BITS)
        if self.mode not in SECAGG_MODES:
            raise ConfigError(f"mode must be one of {', '.join(SECAGG_MODES)}")

    @property
    def trusted(self) -> bool:
        """True in trusted-gateway mode (no masking)."""
        return self.mode == "trusted"

    def to_fields(self) -> dict[str, Any]:
        """Field mapping for the wire."""
        return _to_fields(self)

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> SecAggSettings:
        """Inverse of `to_fields`; unknown/missing keys or bad values raise ConfigError.

        `mode` may be absent (a task from a cloud that predates it): it then means 'secagg'."""
        names = {f.name for f in fields(cls)}
        exact_keys("secagg", check_mapping("secagg", values), names if "mode" in values else names - {"mode"})
        return cls(**values)
