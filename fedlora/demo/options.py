"""The options of `fedlora demo` and the broker it runs on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedlora.demo.workspace import default_cache_dir
from fl_protocol.errors import ConfigError


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of `fedlora demo`."""

    devices: int = 8
    gateways: int = 2
    rounds: int = 5
    dropout: float = 0.25
    broker: str = "auto"
    model: str = "tiny-llama"  # the command line defaults to presets.DEFAULT_MODEL
    http_port: int | None = None  # status page on 127.0.0.1 (None: a free port; 0: none)
    out_dir: Path = Path("fedlora-out")
    report: Path | None = None
    seed: int = 0
    cache_dir: Path = field(default_factory=default_cache_dir)
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False  # INFO-level logs from every node into work/logs
    test_hooks_dir: Path | None = None  # tests only: devices and gateways write plain updates and sums here

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.devices < 2 * self.gateways:
            raise ConfigError("need at least one gateway and two devices per gateway")
        if not 0.0 <= self.dropout < 0.5:
            raise ConfigError(f"--dropout must be in [0, 0.5), got {self.dropout}")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1")


LOCAL_BROKERS = {"auto": "auto", "embedded": "amqtt", "amqtt": "amqtt", "mosquitto": "mosquitto"}


def parse_broker(spec: str) -> tuple[str, int] | None:
    """None for a local broker the demo starts ('auto', 'embedded', 'mosquitto'), else (host, port).

    Raises ConfigError for anything else than those names or mqtt://HOST:PORT with a port in 1..65535.
    """
    if spec in LOCAL_BROKERS:
        return None
    if not spec.startswith("mqtt://") or ":" not in spec[7:]:
        raise ConfigError(
            f"--broker must be 'auto', 'embedded', 'mosquitto' or mqtt://HOST:PORT, got {spec!r}"
        )
    host, _, port = spec[7:].rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--broker port must be 1..65535, got {port!r}")
    return host, int(port)
