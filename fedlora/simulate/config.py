"""`fedlora simulate` configuration: a TOML file (all sections optional) plus command-line overrides.

Sections (unknown keys and wrong types are a ConfigError naming the key):

    [simulate]   model, bundle_dir, devices, gateways, rounds, dropout, fleet_mix, deadline_s, seed,
                 uplink ("secagg" | "dense_fp32"), step_s, data_shards, executor ("local" | "ray"),
                 ray_address, ray_workers, eval_records, downlink_bits (the cloud's [cloud] key)
    [training]   local_steps, batch_size, learning_rate        (the cloud's [training] section)
    [codec]      keep_fraction, quant_bits, ring_bits, rotate, error_feedback       (the cloud's)
    [privacy]    mechanism, clip_norm, noise_multiplier | target_epsilon, min_survivors, delta, tier
    [secagg]     threshold_fraction, neighbour_degree                                (the cloud's)
    [optimizer]  name (fedavg | fedadam | fedyogi), server_lr, beta1, beta2, tau     (the cloud's)

`SimConfig.check()` runs every cross-section rule before any training starts (docs/simulate.md):
unknown fleet mix, a per-gateway cohort smaller than the SecAgg threshold or the DP `min_survivors`,
and a ring that cannot hold the cohort's sum plus noise are one-line ConfigErrors.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator_gateway.cloud.config import (
    CodecSection,
    OptimizerSection,
    PrivacySection,
    SecAggSection,
    TrainingSection,
    check_downlink_setting,
)
from aggregator_gateway.cloud.privacy import resolve_noise_multiplier
from aggregator_gateway.cloud.ring import check_ring_holds_noise
from aggregator_gateway.cloud.tasks import task_ring_bits
from fedlora.simulate.network import FLEET_MIXES
from fl_protocol.codec.downlink import DEFAULT_DOWNLINK_BITS
from fl_protocol.codec.settings import AUTO_RING_BITS, default_scale, sparse_count
from fl_protocol.config import read_toml, renamed_keys, section_from_table
from fl_protocol.errors import ConfigError

UPLINKS = ("secagg", "dense_fp32")
EXECUTORS = ("local", "ray")
MODELS = ("tiny-llama", "tiny-gpt2", "smollm2-135m")
_HOST_PORT = re.compile(r"[\w.\-\[\]:]+:\d{1,5}")  # a Ray head's GCS address: host or IP, then the port


@dataclass(frozen=True, kw_only=True)
class SimulateSection:
    """[simulate]: the fleet, the rounds and how the uplink is carried.

    model: a model name for `fedlora export` (exported once into the cache) unless `bundle_dir` names an
    exported bundle. uplink: "secagg" (the real codec + SecAgg+) or "dense_fp32" (the standard baseline:
    float32 Δ, plain sum, no clipping or noise). dropout: fraction of each gateway's selected devices that
    vanish before uploading (round(dropout · n) per gateway and round). deadline_s: devices whose modelled
    time exceeds it drop (0 = the round waits for everyone). step_s: modelled seconds of one local step on
    the reference device, a job's fixed costs spread over its steps (0 = measure a whole job of
    local_steps on this machine before round 1). data_shards: how many distinct
    non-IID shards the devices share (0 = one per device, capped by the corpus). executor: "local" (one
    trainer in this process) or "ray" (Ray actors, fedlora/simulate/ray_executor.py); ray_address: "" (a
    local Ray instance for the run), "auto" or "HOST:PORT" of a running cluster; ray_workers: actors,
    one trainer each (0 = one per CPU of the cluster). The ray_* keys apply to the "ray" executor only.
    downlink_bits: the cloud's `[cloud] downlink_bits`: 2..8 sends each new version as a quantized delta
    to the devices that hold the previous one, 0 full models only (docs/update-codec.md, "Downlink");
    ignored by the dense_fp32 baseline, which downloads float32 models.
    """

    model: str = "tiny-llama"
    bundle_dir: Path | None = None
    devices: int = 6
    gateways: int = 2
    rounds: int = 2
    dropout: float = 0.0
    fleet_mix: str = "lte"
    deadline_s: float = 0.0
    seed: int = 0
    uplink: str = "secagg"
    step_s: float = 0.0
    data_shards: int = 0
    executor: str = "local"
    ray_address: str = ""
    ray_workers: int = 0
    eval_records: int = 64
    downlink_bits: int = DEFAULT_DOWNLINK_BITS

    def __post_init__(self) -> None:
        if self.model not in MODELS and self.bundle_dir is None:
            raise ValueError(f"model must be one of {', '.join(MODELS)} (or give bundle_dir)")
        if self.devices < 1 or self.gateways < 1 or self.rounds < 1:
            raise ValueError("devices, gateways and rounds must be >= 1")
        if self.gateways > self.devices:
            raise ValueError(f"{self.gateways} gateways for {self.devices} devices: each needs a cohort")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.deadline_s < 0 or self.step_s < 0 or self.data_shards < 0 or self.eval_records < 1:
            raise ValueError("deadline_s, step_s, data_shards >= 0 and eval_records >= 1 are required")
        if self.uplink not in UPLINKS:
            raise ValueError(f"uplink must be one of {', '.join(UPLINKS)}, got {self.uplink!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.ray_workers < 0:
            raise ValueError(f"ray_workers must be >= 0, got {self.ray_workers}")
        if self.ray_address not in ("", "auto") and not _HOST_PORT.fullmatch(self.ray_address):
            raise ValueError(f"ray_address must be 'auto' or HOST:PORT, got {self.ray_address!r}")
        if self.executor != "ray" and (self.ray_address or self.ray_workers):
            raise ValueError("ray_address and ray_workers apply to executor 'ray' only")
        check_downlink_setting(self.downlink_bits)


_SECTIONS: dict[str, type] = {
    "simulate": SimulateSection,
    "training": TrainingSection,
    "codec": CodecSection,
    "privacy": PrivacySection,
    "secagg": SecAggSection,
    "optimizer": OptimizerSection,
}


def _default_privacy() -> PrivacySection:
    """No DP noise by default (the standard baseline has none; the demo's Skellam z = 0.5 with q = 12 in a
    20-bit ring fails the cloud's ring-versus-noise rule): clip C = 2 and min_survivors 2 as the demo."""
    return PrivacySection(mechanism="none", clip_norm=2.0, min_survivors=2)


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Every setting of one simulation (see the module docstring)."""

    simulate: SimulateSection = field(default_factory=SimulateSection)
    training: TrainingSection = field(
        default_factory=lambda: TrainingSection(local_steps=10, batch_size=8, learning_rate=5e-3)
    )
    # keep 100%, rotation, 7-bit values in the smallest ring that holds the sum (docs/benchmarks.md)
    codec: CodecSection = field(
        default_factory=lambda: CodecSection(
            keep_fraction=1.0, quant_bits=7, ring_bits=AUTO_RING_BITS, rotate=True, error_feedback=True
        )
    )
    privacy: PrivacySection = field(default_factory=_default_privacy)
    secagg: SecAggSection = field(default_factory=SecAggSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)

    @classmethod
    def load(cls, path: Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> SimConfig:
        """Read `path` (None: defaults only) and apply `overrides` ({section: {key: value}}, flags)."""
        raw: dict[str, Any] = {} if path is None else read_toml(Path(path))
        unknown = sorted(set(raw) - set(_SECTIONS) | set(overrides or {}) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(_SECTIONS)}")
        base = cls()
        sections: dict[str, Any] = {}
        for name, kind in _SECTIONS.items():
            where = name if path is None else f"{path}: {name}"
            given = {
                **renamed_keys(kind, raw.get(name, {}), where),
                **{k: v for k, v in (overrides or {}).get(name, {}).items() if v is not None},
            }
            table = _merged(name, _as_table(getattr(base, name)), given)
            sections[name] = section_from_table(kind, table, where, base_dir=None)
        return cls(**sections)

    def with_changes(self, **sections: dict[str, Any]) -> SimConfig:
        """A copy with some keys of some sections replaced (validated like a file)."""
        tables = {n: _merged(n, _as_table(getattr(self, n)), sections.get(n, {})) for n in _SECTIONS}
        return SimConfig.load(None, tables)

    @property
    def cohort_sizes(self) -> list[int]:
        """Selected devices per gateway (device i belongs to gateway i mod G)."""
        s = self.simulate
        return [len(range(g, s.devices, s.gateways)) for g in range(s.gateways)]

    def secagg_threshold(self, cohort: int) -> int:
        """Shamir threshold t the gateway uses for a cohort of `cohort` (fraction clamped to [0.5, 0.99])."""
        fraction = min(max(self.secagg.threshold_fraction, 0.5), 0.99)
        return max(2, math.ceil(fraction * cohort))

    def check_static(self) -> None:
        """Rules that need no model: executor installed, fleet mix, cohort vs. SecAgg threshold, baseline."""
        s = self.simulate
        if s.executor == "ray":
            from fedlora.simulate.ray_executor import check_ray_installed

            check_ray_installed()
        if s.fleet_mix not in FLEET_MIXES:
            raise ConfigError(f"unknown fleet mix {s.fleet_mix!r}; known: {', '.join(sorted(FLEET_MIXES))}")
        if self.training.weighting != "uniform":
            raise ConfigError("[training].weighting other than 'uniform' is not simulated yet")
        if self.secagg.mode != "secagg":
            raise ConfigError("[secagg].mode 'trusted' is not simulated: the gateways run SecAgg+")
        if s.uplink == "dense_fp32":
            if self.privacy.mechanism != "none":
                raise ConfigError("the dense_fp32 baseline has no DP: set [privacy].mechanism = 'none'")
            return
        smallest = min(self.cohort_sizes)
        threshold = self.secagg_threshold(smallest)
        survivors = smallest - round(s.dropout * smallest)
        if survivors < threshold or smallest < 3:
            raise ConfigError(
                f"a gateway's cohort of {smallest} devices ({survivors} after dropout {s.dropout}) is "
                f"smaller than the SecAgg threshold t={threshold} (and SecAgg+ needs >= 3): "
                "use fewer gateways or more devices"
            )
        if self.privacy.mechanism != "none" and survivors < self.privacy.min_survivors:
            raise ConfigError(
                f"{survivors} survivors per gateway < [privacy].min_survivors={self.privacy.min_survivors}"
            )

    def check(self, dimension: int) -> None:
        """`check_static` plus the ring width for a model of `dimension` trainable values."""
        self.check_static()
        if self.simulate.uplink != "dense_fp32":
            self.with_ring_for(dimension)._check_ring(max(self.cohort_sizes), dimension)

    def with_ring_for(self, dimension: int) -> SimConfig:
        """This configuration with [codec].ring_bits = 0 ("auto") replaced by the ring the cloud would
        resolve for the largest cohort (`aggregator_gateway.cloud.tasks.task_ring_bits`: the smallest in
        [max(8, q), 32] that the cloud's ring check accepts; ConfigError if none); the dense_fp32 baseline
        has no ring and is returned unchanged.

        The smallest ring sends the fewest bytes: masked values travel bit-packed at the ring width
        (docs/update-codec.md). An explicit ring_bits is returned unchanged.
        """
        if self.codec.ring_bits != AUTO_RING_BITS or self.simulate.uplink == "dense_fp32":
            return self
        _k, scale = self.codec_shape(dimension)
        bits = task_ring_bits(
            self,
            max_cohort=max(self.cohort_sizes),
            noise_multiplier=self.noise_multiplier(dimension),
            scale=scale,
        )
        return self.with_changes(codec={"ring_bits": bits})

    def _check_ring(self, cohort: int, dimension: int) -> None:
        """The cloud's own rule (aggregator_gateway.cloud.ring.check_ring_holds_noise) for this cohort."""
        c, p = self.codec, self.privacy
        _k, scale = self.codec_shape(dimension)
        check_ring_holds_noise(
            quant_bits=c.quant_bits,
            ring_bits=c.ring_bits,
            max_clients=cohort,
            min_survivors=p.min_survivors,
            noise_multiplier=self.noise_multiplier(dimension),
            clip_norm=p.clip_norm,
            scale=scale,
        )

    def codec_shape(self, dimension: int) -> tuple[int, float]:
        """(k, scale) of a d-dimensional model: what the cloud derives (aggregator_gateway.cloud.tasks)."""
        k = sparse_count(dimension, self.codec.keep_fraction)
        return k, default_scale(self.privacy.clip_norm, self.codec.quant_bits, k, rotate=self.codec.rotate)

    def noise_multiplier(self, dimension: int) -> float:
        """z of every round: configured, calibrated from target_epsilon over the rounds, or 0."""
        k, scale = self.codec_shape(dimension)
        return resolve_noise_multiplier(
            self.privacy, rounds=self.simulate.rounds, scale=scale, sparse_length=k
        )


def _merged(name: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`given` over `defaults`; a [privacy] table that names its noise drops the default noise keys."""
    if name == "privacy" and {"mechanism", "noise_multiplier", "target_epsilon"} & set(given):
        defaults = {k: v for k, v in defaults.items() if k not in ("noise_multiplier", "target_epsilon")}
    return {**defaults, **given}


def _as_table(section: Any) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is not None:
            table[f.name] = str(value) if isinstance(value, Path) else value
    return table
