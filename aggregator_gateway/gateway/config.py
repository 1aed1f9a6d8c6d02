"""gateway.toml: the provisioned [node], [broker], [identity] sections plus [gateway] and [debug].

[gateway]
cloud_id = "cloud"            # the only sender whose RoundTask is accepted
expected_devices = []         # empty: devices of this gateway in fleet_keys.json (role "device")
min_cohort = 0                # raises the task's min_cohort (never lowers it); 0: the task's
group_count = 1               # split the cohort into up to this many SecAgg+ groups
min_group_size = 3            # ... each of at least this size (fewer groups when short of devices)
group_rule = "none"           # none | trimmed_mean | median | norm_filter  (combining group means)
trim_fraction = 0.2
max_norm_ratio = 3.0
trusted_mode = false          # must agree with the task's secagg.mode (docs/gateway.md "Trusted mode")
trusted_rule = "krum"         # none | krum | trimmed_mean | median  (per-device rule, trusted mode)
trusted_byzantine = 0         # krum's f; 0: the largest Krum allows, (n - 3) // 2
state_db = "gateway-state.sqlite3"
resume_grace_s = 2.0          # after a restart, stages close no earlier than this
tick_interval_s = 0.05

[debug]
unmasked_sums_dir = "..."     # test hook; honoured only with FEDLORA_TEST_HOOKS=1
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fl_protocol.config import (
    BrokerSection,
    IdentitySection,
    NodeSection,
    read_toml,
    section_from_table,
)
from fl_protocol.errors import ConfigError
from fl_protocol.topics import validate_id

GROUP_RULES = ("none", "trimmed_mean", "median", "norm_filter")
TRUSTED_RULES = ("none", "krum", "trimmed_mean", "median")
TEST_HOOKS_ENV = "FEDLORA_TEST_HOOKS"


@dataclass(frozen=True, kw_only=True)
class GatewaySection:
    """[gateway]: cohort, groups, robust rule, persistence. See the module docstring for defaults."""

    cloud_id: str = "cloud"
    expected_devices: tuple[str, ...] = ()
    min_cohort: int = 0
    group_count: int = 1
    min_group_size: int = 3
    group_rule: str = "none"
    trim_fraction: float = 0.2
    max_norm_ratio: float = 3.0
    trusted_mode: bool = False
    trusted_rule: str = "krum"
    trusted_byzantine: int = 0
    state_db: Path = Path("gateway-state.sqlite3")
    resume_grace_s: float = 2.0
    tick_interval_s: float = 0.05

    def __post_init__(self) -> None:
        validate_id(self.cloud_id, "cloud_id")
        for device in self.expected_devices:
            validate_id(device, "expected device")
        if self.min_cohort < 0 or self.group_count < 1 or self.min_group_size < 2:
            raise ValueError("need min_cohort >= 0, group_count >= 1, min_group_size >= 2")
        if self.group_rule not in GROUP_RULES:
            raise ValueError(f"group_rule must be one of {', '.join(GROUP_RULES)}")
        if self.trusted_rule not in TRUSTED_RULES:
            raise ValueError(f"trusted_rule must be one of {', '.join(TRUSTED_RULES)}")
        if self.trusted_byzantine < 0:
            raise ValueError("trusted_byzantine must be >= 0")
        if not 0.0 <= self.trim_fraction < 0.5 or self.max_norm_ratio < 1.0:
            raise ValueError("need 0 <= trim_fraction < 0.5 and max_norm_ratio >= 1")
        if self.resume_grace_s < 0 or self.tick_interval_s <= 0:
            raise ValueError("need resume_grace_s >= 0 and tick_interval_s > 0")


@dataclass(frozen=True, kw_only=True)
class DebugSection:
    """[debug]: test-only hooks, ignored unless FEDLORA_TEST_HOOKS=1."""

    unmasked_sums_dir: Path | None = None


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Everything `fedlora gateway` reads; paths already resolved against the config's directory."""

    node: NodeSection
    broker: BrokerSection
    identity: IdentitySection
    gateway: GatewaySection
    debug: DebugSection = field(default_factory=DebugSection)
    expected_devices: frozenset[str] = frozenset()

    @property
    def unmasked_sums_dir(self) -> Path | None:
        """The test hook's directory, only when FEDLORA_TEST_HOOKS=1 is set."""
        if self.debug.unmasked_sums_dir is None or os.environ.get(TEST_HOOKS_ENV) != "1":
            return None
        return self.debug.unmasked_sums_dir


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and validate gateway.toml; unknown sections or keys are a ConfigError."""
    path = Path(path)
    doc = read_toml(path)
    unknown = sorted(set(doc) - {"node", "broker", "identity", "gateway", "debug"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    base = path.parent
    node = section_from_table(NodeSection, doc.get("node"), "node")
    if node.role != "gateway":
        raise ConfigError(f"{path}: [node] role must be gateway, got {node.role!r}")
    broker = section_from_table(BrokerSection, doc.get("broker"), "broker", base_dir=base)
    ident = section_from_table(IdentitySection, doc.get("identity"), "identity", base_dir=base)
    gateway = section_from_table(GatewaySection, doc.get("gateway"), "gateway", base_dir=base)
    debug = section_from_table(DebugSection, doc.get("debug"), "debug", base_dir=base)
    expected = frozenset(gateway.expected_devices) or fleet_devices(ident.fleet_keys_file, node.id)
    if not expected:
        raise ConfigError(f"{path}: gateway {node.id} has no expected devices")
    return GatewayConfig(
        node=node, broker=broker, identity=ident, gateway=gateway, debug=debug, expected_devices=expected
    )


def fleet_devices(fleet_keys_file: Path, gateway_id: str) -> frozenset[str]:
    """Ids of the nodes with role "device" whose gateway is `gateway_id`, from fleet_keys.json."""
    try:
        nodes = json.loads(Path(fleet_keys_file).read_text())["nodes"]
        return frozenset(
            node
            for node, entry in nodes.items()
            if entry.get("role") == "device" and entry.get("gateway") == gateway_id
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot read fleet keys {fleet_keys_file}: {exc}") from exc
