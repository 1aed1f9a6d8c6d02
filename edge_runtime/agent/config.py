"""The device's configuration: a provisioned `config.toml` plus the device's own sections.

`fedlora provision` writes `[node]`, `[broker]` and `[identity]`; the operator adds `[device]`, and
optionally `[gates]`, `[privacy.tiers.*]` and `[debug]` (docs/device.md lists every key). Every section is
a frozen dataclass read with `fl_protocol.config.section_from_table`, so an unknown key anywhere is a
ConfigError naming it. Relative paths are resolved against the config file's directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_protocol.config import (
    BrokerSection,
    IdentitySection,
    NodeSection,
    read_toml,
    section_from_table,
)
from fl_protocol.dp.tiers import TierConfig
from fl_protocol.errors import ConfigError
from fl_protocol.topics import validate_id

logger = logging.getLogger(__name__)

TEST_HOOKS_ENV = "FEDLORA_TEST_HOOKS"
_TOP_LEVEL = ("node", "broker", "identity", "device", "gates", "privacy", "debug")
_BACKENDS = ("auto", "ort", "torch")
_COMPUTE_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, kw_only=True)
class DeviceSection:
    """[device]: what to train, on which data, where to keep state, whom to trust for tasks."""

    bundle_dir: Path
    data_dir: Path
    state_dir: Path = Path("state")
    default_tier: str = "personal"
    backend: str = "auto"
    compute_device: str = "auto"
    thread_spinning: bool = True  # ONNX Runtime pool threads busy-wait between kernels; off on shared cores
    eval_fraction: float = 0.1
    data_seed: int = 0
    cloud_id: str = "cloud"
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 0.0  # 0: wait for the broker forever (paho keeps retrying)
    allow_trusted_gateway: bool = False  # take part in trusted-mode rounds (update sent unmasked)

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}")
        if self.compute_device not in _COMPUTE_DEVICES:
            raise ValueError(f"compute_device must be one of {', '.join(_COMPUTE_DEVICES)}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.connect_timeout_s < 0:
            raise ValueError("connect_timeout_s must be >= 0")
        validate_id(self.cloud_id, "cloud_id")
        validate_id(self.default_tier, "default_tier")


@dataclass(frozen=True, kw_only=True)
class GatesSection:
    """[gates]: local conditions for taking part in a round. A limit of 0 (or 1000 °C) disables it.

    The sysfs/procfs roots are configurable so tests can point them at a fake tree.
    """

    max_temp_c: float = 85.0
    min_free_memory_mb: int = 256
    min_battery_percent: float = 20.0
    require_charging: bool = False
    thermal_root: Path = Path("/sys/class/thermal")
    power_supply_root: Path = Path("/sys/class/power_supply")
    meminfo_path: Path = Path("/proc/meminfo")

    def __post_init__(self) -> None:
        if self.min_free_memory_mb < 0 or not 0.0 <= self.min_battery_percent <= 100.0:
            raise ValueError("min_free_memory_mb must be >= 0 and min_battery_percent in [0, 100]")


@dataclass(frozen=True, kw_only=True)
class DebugSection:
    """[debug]: test hooks that weaken privacy. Refused unless FEDLORA_TEST_HOOKS=1 is set.

    plain_updates_dir: write each round's pre-mask ring values (round-{r}-{device}.npy) there.
    """

    plain_updates_dir: Path | None = None

    @property
    def any_enabled(self) -> bool:
        """True if at least one hook is set."""
        return self.plain_updates_dir is not None


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    """Everything `fedlora device` needs, with paths already resolved."""

    node: NodeSection
    broker: BrokerSection
    identity: IdentitySection
    device: DeviceSection
    gates: GatesSection = field(default_factory=GatesSection)
    tiers: TierConfig = field(default_factory=TierConfig)
    debug: DebugSection = field(default_factory=DebugSection)
    base_dir: Path = Path(".")


def load_device_config(path: Path, *, environ: Mapping[str, str] | None = None) -> DeviceConfig:
    """Read and validate a device config file; ConfigError for anything unknown, missing or unsafe."""
    path = Path(path)
    table = read_toml(path)
    return device_config_from_table(table, base_dir=path.resolve().parent, environ=environ)


def device_config_from_table(
    table: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> DeviceConfig:
    """Build a DeviceConfig from a parsed TOML document (see `load_device_config`)."""
    unknown = sorted(set(table) - set(_TOP_LEVEL))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; allowed: {', '.join(_TOP_LEVEL)}")
    node = section_from_table(NodeSection, table.get("node"), "node")
    if node.role != "device":
        raise ConfigError(f"[node].role is {node.role!r}; `fedlora device` needs a device config")
    privacy = table.get("privacy") or {}
    if not isinstance(privacy, Mapping) or set(privacy) - {"tiers"}:
        raise ConfigError("[privacy] may only hold the [privacy.tiers.*] tables")
    config = DeviceConfig(
        node=node,
        broker=section_from_table(BrokerSection, table.get("broker"), "broker", base_dir=base_dir),
        identity=section_from_table(IdentitySection, table.get("identity"), "identity", base_dir=base_dir),
        device=section_from_table(DeviceSection, table.get("device"), "device", base_dir=base_dir),
        gates=section_from_table(GatesSection, table.get("gates"), "gates", base_dir=base_dir),
        tiers=TierConfig.from_toml_dict(privacy.get("tiers") or {}),
        debug=section_from_table(DebugSection, table.get("debug"), "debug", base_dir=base_dir),
        base_dir=base_dir,
    )
    config.tiers.policy(config.device.default_tier)  # unknown default tier -> ConfigError
    check_debug_hooks(config.debug, os.environ if environ is None else environ)
    return config


def check_debug_hooks(debug: DebugSection, environ: Mapping[str, str]) -> None:
    """Refuse test hooks unless the environment opts in: they write un-masked updates to disk."""
    if debug.any_enabled and environ.get(TEST_HOOKS_ENV) != "1":
        raise ConfigError(
            f"[debug] hooks break privacy and are for tests only; set {TEST_HOOKS_ENV}=1 to allow them"
        )
    if debug.any_enabled:
        logger.warning("test hooks enabled: pre-mask updates are written to %s", debug.plain_updates_dir)
