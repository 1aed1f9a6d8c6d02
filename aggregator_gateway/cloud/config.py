"""cloud.toml: the provisioned [node]/[broker]/[identity] sections plus the cloud's own sections.

Every section is a frozen dataclass read with `fl_protocol.config.section_from_table` (unknown keys and
wrong types are a ConfigError naming the key). Cross-section rules (e.g. ring width versus fleet size)
are checked in `CloudConfig.__post_init__`. See docs/cloud.md for the reference and an example.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aggregator_gateway.cloud.ring import check_ring_holds_noise, smallest_ring_bits
from fl_protocol.codec.downlink import DEFAULT_DOWNLINK_BITS, MAX_DOWNLINK_BITS, MIN_DOWNLINK_BITS
from fl_protocol.codec.settings import AUTO_RING_BITS, MAX_RING_BITS, MIN_QUANT_BITS, MIN_RING_BITS
from fl_protocol.config import (
    BrokerSection,
    IdentitySection,
    NodeSection,
    read_toml,
    section_from_table,
)
from fl_protocol.errors import ConfigError
from fl_protocol.stages import DEADLINE_STAGES
from fl_protocol.topics import validate_id
from fl_protocol.wire.fields import MAX_COHORT_DEVICES
from fl_protocol.wire.task_settings import DP_MECHANISMS, SECAGG_MODES, TrainingSettings

OPTIMIZERS = ("fedavg", "fedadam", "fedyogi")
ROBUST_RULES = ("none", "trimmed_mean", "median", "norm_filter", "krum")
WEIGHTINGS = ("count", "fair")


@dataclass(frozen=True, kw_only=True)
class StageTimeouts:
    """[cloud.stage_timeouts_s]: how long each stage may last, in seconds.

    One field per `fl_protocol.stages.DEADLINE_STAGES` member, named by its value.

    Deadlines are cumulative: advertise closes at start + advertise, shares at that + shares, and so on;
    the cloud closes the round at the `partial` deadline (or earlier, once every gateway reported).
    """

    advertise: float = 30.0
    shares: float = 30.0
    masked: float = 300.0
    consistency: float = 30.0
    unmask: float = 30.0
    partial: float = 60.0

    def __post_init__(self) -> None:
        for stage in DEADLINE_STAGES:
            value = getattr(self, stage.value)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"stage timeout {stage.value} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class CloudSection:
    """[cloud]: the federation's shape and where the cloud keeps its state.

    total_devices: fleet size, sizes the ring-width check (0: unknown). It never lowers ε: rounds are
        accounted with sample rate 1, since devices join by availability, not by random sampling.
    http_port: status page port (default 8080 on http_host 127.0.0.1; 0: no status page).
    max_retries: failed attempts allowed per round.
    downlink_bits: bits per value of the quantized model delta published next to every new version
        (2..8, docs/update-codec.md "Downlink"); 0 publishes full models only.
    """

    bundle_dir: Path
    rounds: int
    gateways: tuple[str, ...]
    store_dir: Path
    total_devices: int = 0
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_retries: int = 3
    min_cohort: int = 0  # 0: equal to privacy.min_survivors
    downlink_bits: int = DEFAULT_DOWNLINK_BITS
    stage_timeouts_s: StageTimeouts = field(default_factory=StageTimeouts)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if not self.gateways:
            raise ValueError("gateways must name at least one gateway")
        if len(set(self.gateways)) != len(self.gateways):
            raise ValueError("gateways must be unique")
        for gateway in self.gateways:
            validate_id(gateway, "gateway")
        if self.total_devices < 0 or self.max_retries < 0 or self.min_cohort < 0:
            raise ValueError("total_devices, max_retries and min_cohort must be >= 0")
        if not 0 <= self.http_port < 65536:
            raise ValueError("http_port must be in 0..65535")
        check_downlink_setting(self.downlink_bits)


def check_downlink_setting(bits: int) -> None:
    """ValueError unless `bits` is 0 (full models only) or in [2, 8] (quantized model deltas)."""
    if bits != 0 and not MIN_DOWNLINK_BITS <= bits <= MAX_DOWNLINK_BITS:
        raise ValueError(
            f"downlink_bits must be 0 (full models only) or in {MIN_DOWNLINK_BITS}..{MAX_DOWNLINK_BITS}, "
            f"got {bits}"
        )


@dataclass(frozen=True, kw_only=True)
class TrainingSection:
    """[training]: local training settings sent to devices in every task.

    weighting: 'uniform', 'qffl' (fairness: w = min(1, (F_k / weight_reference)^qffl_q), F_k the global
    model's loss on the device's data) or 'datasize' (w = min(1, rows / weight_reference)); devices send
    (w·Δ, w) inside the secure sum and [aggregation] weighting must then be 'fair' (divide by Σ w).
    """

    local_steps: int = 10
    batch_size: int = 8
    learning_rate: float = 1e-3
    weighting: str = "uniform"
    qffl_q: float = 1.0
    weight_reference: float = 1.0

    def __post_init__(self) -> None:
        TrainingSettings(
            local_steps=self.local_steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            weighting=self.weighting,
            qffl_q=self.qffl_q,
            weight_reference=self.weight_reference,
        )  # one set of rules: the wire settings validate


@dataclass(frozen=True, kw_only=True)
class CodecSection:
    """[codec]: update pipeline settings (docs/update-codec.md); seeds and scale are chosen per round.

    keep_fraction: the fraction of coordinates each update keeps (shared random-k; 1 = dense). Its old
    name `sparsity_fraction` is still read, with a deprecation warning (docs/operations.md, "Upgrading").
    quant_bits: q, bits per quantized value (2..32, at most ring_bits when that is given).
    ring_bits: b of Z_{2^b}, 8..32, or 0 (the default): the smallest ring that holds the largest cohort's
        sum plus its DP noise, resolved for every task (aggregator_gateway/cloud/ring.py); tasks always
        carry 8..32. Defaults q = 7 in the smallest ring: docs/benchmarks.md, "smollm2-135m".
    """

    RENAMED_KEYS: ClassVar[Mapping[str, str]] = {"sparsity_fraction": "keep_fraction"}

    keep_fraction: float = 1.0
    quant_bits: int = 7
    ring_bits: int = AUTO_RING_BITS
    rotate: bool = True
    error_feedback: bool = True

    def __post_init__(self) -> None:
        b, q = self.ring_bits, self.quant_bits
        if b != AUTO_RING_BITS and not MIN_RING_BITS <= b <= MAX_RING_BITS:
            raise ValueError(
                f"ring_bits must be 0 (the smallest ring) or in {MIN_RING_BITS}..{MAX_RING_BITS}, got {b}"
            )
        if not MIN_QUANT_BITS <= q <= (b or MAX_RING_BITS):
            raise ValueError(
                f"quant_bits must be in {MIN_QUANT_BITS}..{b or MAX_RING_BITS} (ring_bits), got {q}"
            )


@dataclass(frozen=True, kw_only=True)
class PrivacySection:
    """[privacy] (required): DP settings. Give noise_multiplier or target_epsilon (calibrated over
    `rounds`), unless mechanism is 'none'. clip_norm is the devices' L2 clip C."""

    mechanism: str = "skellam"
    clip_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    min_survivors: int = 2
    delta: float = 1e-5
    tier: str = "personal"  # the devices' default record tier ([device] default_tier): defaults meet

    def __post_init__(self) -> None:
        if self.mechanism not in DP_MECHANISMS:
            raise ValueError(f"mechanism must be one of {sorted(DP_MECHANISMS)}")
        given = (self.noise_multiplier is not None) + (self.target_epsilon is not None)
        if self.mechanism == "none" and given:
            raise ValueError("mechanism 'none' takes neither noise_multiplier nor target_epsilon")
        if self.mechanism != "none" and given != 1:
            raise ValueError("give exactly one of noise_multiplier and target_epsilon")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ValueError("noise_multiplier must be > 0")
        if self.target_epsilon is not None and not self.target_epsilon > 0:
            raise ValueError("target_epsilon must be > 0")
        if not self.clip_norm > 0 or self.min_survivors < 1 or not 0 < self.delta < 1:
            raise ValueError("clip_norm > 0, min_survivors >= 1 and delta in (0, 1) are required")
        validate_id(self.tier, "tier")


@dataclass(frozen=True, kw_only=True)
class SecAggSection:
    """[secagg]: Shamir threshold fraction and neighbour degree (0: the gateway picks ~2 log2 n);
    mode "secagg" (masking) or "trusted" (no masking, per-device robust rule at the gateway)."""

    threshold_fraction: float = 0.5
    neighbour_degree: int = 0
    mode: str = "secagg"

    def __post_init__(self) -> None:
        if self.mode not in SECAGG_MODES:
            raise ValueError(f"mode must be one of {', '.join(SECAGG_MODES)}, got {self.mode!r}")


@dataclass(frozen=True, kw_only=True)
class OptimizerSection:
    """[optimizer]: server optimizer (Reddi et al. 2021). beta1/beta2/tau apply to fedadam/fedyogi."""

    name: str = "fedavg"
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer name must be one of {OPTIMIZERS}")
        if not self.server_lr > 0 or not 0 <= self.beta1 < 1 or not 0 <= self.beta2 < 1 or not self.tau > 0:
            raise ValueError("server_lr > 0, beta1 and beta2 in [0, 1) and tau > 0 are required")


@dataclass(frozen=True, kw_only=True)
class AggregationSection:
    """[aggregation]: robust rule across gateways and how partials are weighted.

    weighting 'count': mean = sum of vectors / number of survivors; 'fair': divide by the weight sum the
    devices carried inside the secure sum (q-FFL weights, docs/update-codec.md).
    """

    robust: str = "none"
    weighting: str = "count"
    trim_fraction: float = 0.2
    max_norm_ratio: float = 3.0
    num_byzantine: int = 1

    def __post_init__(self) -> None:
        if self.robust not in ROBUST_RULES:
            raise ValueError(f"robust must be one of {ROBUST_RULES}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}")
        if not 0 <= self.trim_fraction < 0.5:
            raise ValueError("trim_fraction must be in [0, 0.5)")
        if not self.max_norm_ratio >= 1 or self.num_byzantine < 0:
            raise ValueError("max_norm_ratio must be >= 1 and num_byzantine >= 0")


_SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "broker": BrokerSection,
    "identity": IdentitySection,
    "cloud": CloudSection,
    "training": TrainingSection,
    "codec": CodecSection,
    "privacy": PrivacySection,
    "secagg": SecAggSection,
    "optimizer": OptimizerSection,
    "aggregation": AggregationSection,
}
_OPTIONAL = {"training", "codec", "secagg", "optimizer", "aggregation"}


@dataclass(frozen=True, kw_only=True)
class CloudConfig:
    """Everything `fedlora cloud` reads from cloud.toml; paths already resolved against its directory."""

    node: NodeSection
    broker: BrokerSection
    identity: IdentitySection
    cloud: CloudSection
    privacy: PrivacySection
    training: TrainingSection = field(default_factory=TrainingSection)
    codec: CodecSection = field(default_factory=CodecSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    aggregation: AggregationSection = field(default_factory=AggregationSection)

    def __post_init__(self) -> None:
        if self.node.role != "cloud":
            raise ConfigError(f"[node].role must be 'cloud' for `fedlora cloud`, got {self.node.role!r}")
        if self.node.id in self.cloud.gateways:
            raise ConfigError("the cloud's own id cannot be one of [cloud].gateways")
        if 0 < self.cloud.min_cohort < self.privacy.min_survivors:
            raise ConfigError("[cloud].min_cohort must be >= [privacy].min_survivors")
        weighted = self.training.weighting != "uniform"
        if weighted and self.privacy.mechanism != "none":
            raise ConfigError(
                "[training] weighting 'qffl'/'datasize' needs [privacy] mechanism = 'none': the weight "
                "coordinate carries no DP noise, so weighted rounds refuse DP (docs/privacy.md)"
            )
        if weighted != (self.aggregation.weighting == "fair"):
            raise ConfigError(
                "[training] weighting 'qffl'/'datasize' and [aggregation] weighting 'fair' go together: "
                "devices send (w·Δ, w) and the cloud divides by Σ w"
            )
        self._check_ring()

    def _check_ring(self) -> None:
        """The ring rule (aggregator_gateway/cloud/ring.py) as far as it needs no model: GlobalStep checks
        the full bound at start, once the model's dimension fixes the scale s.

        Here s is its least value over all models, qmax / C (`fl_protocol.codec.settings.default_scale`
        never goes below it), and the noise multiplier z is the given one (0 while it is still to be
        calibrated from target_epsilon), so whatever fails here would fail at start too. An explicit
        ring must hold max(total_devices, min_cohort) devices' sum; ring 0 needs some ring of at most 32
        bits for `max_cohort` devices.
        """
        codec, privacy = self.codec, self.privacy
        noisy = privacy.mechanism != "none" and privacy.noise_multiplier is not None
        rule: dict[str, Any] = {
            "quant_bits": codec.quant_bits,
            "min_survivors": privacy.min_survivors,
            "noise_multiplier": privacy.noise_multiplier if noisy else 0.0,
            "clip_norm": privacy.clip_norm,
            "scale": ((1 << (codec.quant_bits - 1)) - 1) / privacy.clip_norm,
        }
        if codec.ring_bits == AUTO_RING_BITS:
            remedy = f"[codec] ring_bits = 0 with quant_bits = {codec.quant_bits}: {self._ring_remedy()}"
            smallest_ring_bits(max_clients=self.max_cohort, remedy=remedy, **rule)
        else:
            n = max(self.cloud.total_devices, self.min_cohort)
            check_ring_holds_noise(ring_bits=codec.ring_bits, max_clients=n, **rule)

    def _ring_remedy(self) -> str:
        if self.cloud.total_devices == 0:
            return (
                f"set [cloud].total_devices (unset, a cohort is bounded only by the wire's "
                f"{MAX_COHORT_DEVICES} devices), lower quant_bits or the noise"
            )
        return "lower quant_bits, the noise or [cloud].total_devices"

    @property
    def min_cohort(self) -> int:
        """Smallest cohort a gateway may aggregate (never below privacy.min_survivors)."""
        return self.cloud.min_cohort or self.privacy.min_survivors

    @property
    def max_cohort(self) -> int:
        """Largest cohort a gateway may aggregate: the n for which `[codec] ring_bits = 0` is resolved.

        [cloud].total_devices when set (no gateway can aggregate more devices than the fleet has), else
        MAX_COHORT_DEVICES (16,384: a partial's survivor list cannot name more on the wire, so no larger
        sum ever reaches the cloud); the smaller of the two when both apply, never below min_cohort. Both
        bounds hold whatever the gateways do, which is what makes the resolved ring safe; the gateways'
        real cohorts (unknown to the cloud) are usually smaller.
        """
        total = self.cloud.total_devices
        bound = MAX_COHORT_DEVICES if total == 0 else min(total, MAX_COHORT_DEVICES)
        return max(bound, self.min_cohort)

    @classmethod
    def load(cls, path: Path) -> CloudConfig:
        """Read and validate cloud.toml; relative paths are resolved against the file's directory."""
        path = Path(path)
        raw = read_toml(path)
        unknown = sorted(set(raw) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
        sections: dict[str, Any] = {
            name: section_from_table(kind, raw.get(name), name, base_dir=path.parent)
            for name, kind in _SECTIONS.items()
            if name in raw or name not in _OPTIONAL
        }
        return cls(**sections)
