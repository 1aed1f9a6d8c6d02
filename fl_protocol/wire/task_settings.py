"""Settings blocks carried inside a RoundTask: training, differential privacy, secure aggregation.

Each is a frozen, keyword-only dataclass declared with the wire schema (fl_protocol.wire.schema): checked
when built (ConfigError naming the field), with `to_fields()` / `from_fields()` for the field codec. Codec
settings live in fl_protocol.codec.settings. Field tables: docs/wire-format.md.
"""

from __future__ import annotations

from fl_protocol.codec.settings import MAX_RING_BITS, MIN_RING_BITS
from fl_protocol.errors import ConfigError
from fl_protocol.wire.schema import Record, wire
from fl_protocol.wire.wire_types import Choice, Float, Int

DP_MECHANISMS = frozenset({"skellam", "gaussian", "none"})
SECAGG_MODES = ("secagg", "trusted")
WEIGHTINGS = frozenset({"uniform", "qffl", "datasize"})


class TrainingSettings(Record, kw_only=True):
    """Local training of one round: optimizer steps per device, batch size, local learning rate, weighting.

    weighting: how a device weighs its update inside the secure sum (docs/update-codec.md, "Weights inside
    the secure sum"): 'uniform' (w = 1), 'qffl' (w = min(1, (F_k / weight_reference)^qffl_q) with F_k the
    global model's loss on the device's data: fairness, Li et al. 2020) or 'datasize'
    (w = min(1, rows_k / weight_reference)). The device sends (w·Δ, w); the gateway learns only the sums.
    Tasks without these fields (older clouds) mean 'uniform'.
    """

    local_steps: int = wire(Int(1, 1_000_000), doc="optimizer steps per device")
    batch_size: int = wire(Int(1, 1_000_000), doc="examples per step")
    learning_rate: float = wire(Float(0.0, lo_open=True), doc="local learning rate")
    weighting: str = wire(Choice(WEIGHTINGS), default="uniform", optional=True, doc="aggregation weight rule")
    qffl_q: float = wire(Float(0.0, 100.0), default=1.0, optional=True, doc="q of q-FFL")
    weight_reference: float = wire(
        Float(0.0, lo_open=True), default=1.0, optional=True, doc="loss or row count at which w = 1"
    )

    @property
    def weighted(self) -> bool:
        """True when devices send a weight coordinate with their update."""
        return self.weighting != "uniform"


class DpSettings(Record, kw_only=True):
    """Differential privacy of one round (docs/privacy.md §2-§3).

    mechanism: 'skellam', 'gaussian' (discrete Gaussian; both integer shares after the clamp) or 'none'.
    noise_multiplier: sigma / clip_norm of the cohort's total noise; 0 iff mechanism is 'none'.
    clip_norm: L2 bound C (must equal the codec's clip_norm; RoundTask checks it).
    min_survivors: the total noise reaches its target only if at least this many devices survive.
    target_delta: delta of the (epsilon, delta) guarantee, in (0, 1).
    """

    mechanism: str = wire(Choice(DP_MECHANISMS), doc="noise mechanism")
    noise_multiplier: float = wire(Float(0.0), doc="σ / clip_norm of the cohort's total noise")
    clip_norm: float = wire(Float(0.0, lo_open=True), doc="L2 bound C of one update")
    min_survivors: int = wire(Int(1, 1_000_000), doc="survivors the noise target assumes")
    target_delta: float = wire(Float(0.0, 1.0, lo_open=True, hi_open=True), doc="δ of the (ε, δ) guarantee")

    def validate(self) -> None:
        """`noise_multiplier` is 0 exactly when `mechanism` is `none`."""
        if (self.noise_multiplier == 0.0) != (self.mechanism == "none"):
            raise ConfigError("noise_multiplier must be 0 exactly when mechanism is 'none'")


class SecAggSettings(Record, kw_only=True):
    """Secure aggregation (SecAgg+) of one round.

    threshold_fraction: Shamir threshold t as a fraction of the neighbourhood size, in (0, 1].
    neighbour_degree: k of the k-regular neighbour graph; 0 lets the gateway pick k ~ 2 log2 n.
    ring_bits: b of Z_{2^b} (must equal the codec's ring_bits; RoundTask checks it).
    mode: 'secagg' (devices mask, the gateway learns only sums) or 'trusted' (no masking: devices that
    opted in send their encoded update as a PlainUpdate and the gateway applies a per-device robust rule,
    docs/gateway.md "Trusted mode"). A task without the field (older clouds) decodes as 'secagg'.
    """

    threshold_fraction: float = wire(Float(0.0, 1.0, lo_open=True), doc="Shamir t / neighbourhood size")
    neighbour_degree: int = wire(Int(0, 1_000_000), doc="k of the neighbour graph; 0 = the gateway picks")
    ring_bits: int = wire(Int(MIN_RING_BITS, MAX_RING_BITS), doc="b of Z_2^b")
    mode: str = wire(
        Choice(SECAGG_MODES), default="secagg", optional=True, doc="masking, or a trusted gateway"
    )

    @property
    def trusted(self) -> bool:
        """True in trusted-gateway mode (no masking)."""
        return self.mode == "trusted"
