"""TOML configuration files for the demo's cloud, gateways and devices.

The demo provisions a real fleet (identities, fleet key directory) with `fedlora provision` and then
writes one role config per node that points at the demo's broker without TLS: the embedded broker is a
local convenience, and every application-layer protection (signatures, secure aggregation, DP) still runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    """Federation settings the demo sends to every role (the cloud puts them into each task)."""

    rounds: int
    gateways: tuple[str, ...]
    total_devices: int
    local_steps: int = 10
    batch_size: int = 8
    learning_rate: float = 5e-3
    clip_norm: float = 2.0
    mechanism: str = "skellam"
    noise_multiplier: float = 0.5
    min_survivors: int = 2
    delta: float = 1e-5
    tier: str = "public"
    keep_fraction: float = 0.5  # fraction of coordinates each update keeps (shared random-k)
    quant_bits: int = 12
    ring_bits: int = 20
    server_lr: float = 1.0
    weighting: str = "uniform"  # 'qffl' or 'datasize': (w·Δ, w) inside the secure sum
    qffl_q: float = 1.0
    weight_reference: float = 6.0  # q-FFL: loss at which w = 1 (the tiny model starts near ln 260 ≈ 5.6)
    stage_timeouts_s: Mapping[str, float] | None = None
    keepalive_s: int = 20  # MQTT keepalive of every node (a busy 2-core box needs more for a real model)


# Seconds per stage. A stage closes early once every expected device answered, so these only bound how
# long a round waits for devices that died; training the tiny model takes a few seconds even with eight
# device processes sharing two cores.
DEFAULT_TIMEOUTS_S = {
    "advertise": 8.0,
    "shares": 4.0,
    "masked": 15.0,
    "consistency": 4.0,
    "unmask": 4.0,
    "partial": 8.0,
}


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Render {"section": {key: value}} (section names may be dotted) as TOML; None values are left out."""
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in table.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


# The embedded amqtt broker speaks MQTT 3.1.1 only (an MQTT 5 CONNECT with properties hangs it): nodes
# that connect to it say so in [broker]; any other broker gets MQTT 5, which announces its packet limit.
EMBEDDED_BROKER_MQTT_VERSION = "3.1.1"


def _common(
    node_dir: Path,
    node_id: str,
    role: str,
    fleet: str,
    broker: tuple[str, int],
    gateway: str | None = None,
    mqtt_version: str | None = None,
    keepalive_s: int = 20,
) -> dict[str, dict[str, Any]]:
    return {
        "node": {"id": node_id, "role": role, "fleet": fleet, "gateway": gateway},
        "broker": {
            "host": broker[0],
            "port": broker[1],
            "keepalive_s": keepalive_s,
            "mqtt_version": mqtt_version,
        },
        "identity": {
            "signing_key_file": node_dir / "signing.key",
            "fleet_keys_file": node_dir / "fleet_keys.json",
        },
    }


def cloud_config(
    node_dir: Path,
    *,
    fleet: str,
    broker: tuple[str, int],
    bundle_dir: Path,
    store_dir: Path,
    settings: DemoSettings,
    http_port: int,
    mqtt_version: str | None = None,
    keepalive_s: int = 20,
) -> str:
    """cloud.toml for the demo."""
    tables = _common(
        node_dir, "cloud", "cloud", fleet, broker, mqtt_version=mqtt_version, keepalive_s=settings.keepalive_s
    )
    tables["cloud"] = {
        "bundle_dir": bundle_dir,
        "rounds": settings.rounds,
        "gateways": list(settings.gateways),
        "store_dir": store_dir,
        "total_devices": settings.total_devices,
        "http_port": http_port,
        "max_retries": 3,
    }
    tables["cloud.stage_timeouts_s"] = dict(settings.stage_timeouts_s or DEFAULT_TIMEOUTS_S)
    tables["training"] = {
        "local_steps": settings.local_steps,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "weighting": settings.weighting,
        "qffl_q": settings.qffl_q,
        "weight_reference": settings.weight_reference,
    }
    tables["codec"] = {
        "keep_fraction": settings.keep_fraction,
        "quant_bits": settings.quant_bits,
        "ring_bits": settings.ring_bits,
        "rotate": True,
        "error_feedback": True,
    }
    privacy: dict[str, Any] = {
        "mechanism": settings.mechanism,
        "clip_norm": settings.clip_norm,
        "min_survivors": settings.min_survivors,
        "delta": settings.delta,
        "tier": settings.tier,
    }
    if settings.mechanism != "none":
        privacy["noise_multiplier"] = settings.noise_multiplier
    tables["privacy"] = privacy
    tables["optimizer"] = {"name": "fedavg", "server_lr": settings.server_lr}
    tables["aggregation"] = {"weighting": "count" if settings.weighting == "uniform" else "fair"}
    return render_toml(tables)


def gateway_config(
    node_dir: Path,
    gateway: str,
    *,
    fleet: str,
    broker: tuple[str, int],
    state_db: Path,
    min_cohort: int,
    hooks_dir: Path | None = None,
    mqtt_version: str | None = None,
    keepalive_s: int = 20,
) -> str:
    """gateway.toml for the demo; `hooks_dir` turns on the unmasked-sum test hook (tests only)."""
    tables = _common(
        node_dir, gateway, "gateway", fleet, broker, mqtt_version=mqtt_version, keepalive_s=keepalive_s
    )
    tables["gateway"] = {"min_cohort": min_cohort, "state_db": state_db}
    if hooks_dir is not None:
        tables["debug"] = {"unmasked_sums_dir": hooks_dir / "sums"}
    return render_toml(tables)


def device_config(
    node_dir: Path,
    device: str,
    gateway: str,
    *,
    fleet: str,
    broker: tuple[str, int],
    bundle_dir: Path,
    data_dir: Path,
    state_dir: Path,
    tier: str,
    data_seed: int,
    hooks_dir: Path | None = None,
    mqtt_version: str | None = None,
    keepalive_s: int = 20,
) -> str:
    """device.toml for the demo: ORT backend on CPU, the demo tier as the default tier of its records.

    `hooks_dir` turns on the plain-update test hook (tests only: it writes pre-mask updates to disk).
    """
    tables = _common(
        node_dir, device, "device", fleet, broker, gateway, mqtt_version, keepalive_s=keepalive_s
    )
    tables["device"] = {
        "bundle_dir": bundle_dir,
        "data_dir": data_dir,
        "state_dir": state_dir,
        "default_tier": tier,
        "compute_device": "cpu",
        # the demo's devices train at the same time on the same cores: idle ORT threads must sleep
        "thread_spinning": False,
        "data_seed": data_seed,
        "reconnect_min_s": 0.5,
        "reconnect_max_s": 2.0,
    }
    # The demo box is a shared CI-sized machine, not a hot Jetson: keep the gates but do not let a busy
    # host's memory reading sit devices out.
    tables["gates"] = {"min_free_memory_mb": 64}
    if hooks_dir is not None:
        tables["debug"] = {"plain_updates_dir": hooks_dir / "plain"}
    return render_toml(tables)
