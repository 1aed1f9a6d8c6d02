"""Connection settings, last will, the transport's error, and MQTT packet-size arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fl_protocol.config import BrokerSection
from fl_protocol.errors import ConfigError, FedloraError


class TransportError(FedloraError):
    """The broker could not be reached or refused an operation."""


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to connect. TLS with a client certificate when `ca_file` and `cert_file` are set."""

    host: str
    port: int
    client_id: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    clean_session: bool = False  # persistent session: the broker keeps our subscriptions and QoS 1 queue
    max_packet_bytes: int | None = None  # the broker's max_packet_size when it cannot tell (MQTT 3.1.1)
    mqtt_version: str = "5"  # or "3.1.1" for brokers that hang on an MQTT 5 CONNECT (amqtt)

    def __post_init__(self) -> None:
        if self.mqtt_version not in ("5", "3.1.1"):
            raise ConfigError(f'mqtt_version must be "5" or "3.1.1", got {self.mqtt_version!r}')

    @classmethod
    def from_broker(
        cls,
        broker: BrokerSection,
        client_id: str,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> MqttSettings:
        """Settings for a node's `[broker]` section (paths already resolved) with its reconnect backoff."""
        return cls(
            broker.host,
            broker.port,
            client_id,
            ca_file=broker.ca_file,
            cert_file=broker.cert_file,
            key_file=broker.key_file,
            keepalive_s=broker.keepalive_s,
            max_packet_bytes=broker.max_packet_bytes,
            mqtt_version=broker.mqtt_version,
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )


@dataclass(frozen=True)
class Will:
    """Last will: published by the broker if this node vanishes without disconnecting."""

    topic: str
    payload: bytes
    retain: bool = True


def publish_packet_bytes(topic: str, payload_bytes: int, *, qos: int, mqtt5: bool) -> int:
    """Size in bytes of the MQTT PUBLISH packet carrying `payload_bytes` on `topic` (no properties)."""
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + (1 if mqtt5 else 0) + payload_bytes
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining
