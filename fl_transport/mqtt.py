"""One MQTT connection per node: TLS, QoS 1, persistent session, reconnect with backoff, LWT, outbox.

paho-mqtt 2.x with `CallbackAPIVersion.VERSION2`. paho's return codes are turned into exceptions here
and nowhere else. Incoming messages are handed to one callback from paho's network thread; roles put
them on a queue and process them on their own thread, so protocol state is single-threaded.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from fl_protocol.config import BrokerSection
from fl_protocol.errors import FedloraError
from fl_transport.outbox import Outbox, OutboxEntry

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


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
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )


@dataclass(frozen=True)
class Will:
    """Last will: published by the broker if this node vanishes without disconnecting."""

    topic: str
    payload: bytes
    retain: bool = True


class MqttConnection:
    """A connected (or reconnecting) MQTT client with an optional on-disk outbox."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler,
        *,
        will: Will | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._outbox = outbox
        self._subscriptions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pending_acks: dict[int, str | None] = {}  # mid -> outbox key (None: not durable)
        self._early_acks: set[int] = set()
        self._connected = threading.Event()
        self._stopping = False
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=settings.clean_session,
            protocol=paho.MQTTv311,
        )
        self._client.reconnect_delay_set(
            min_delay=max(1, int(settings.reconnect_min_s)), max_delay=max(1, int(settings.reconnect_max_s))
        )
        if settings.ca_file is not None:
            self._client.tls_set(
                ca_certs=str(settings.ca_file),
                certfile=None if settings.cert_file is None else str(settings.cert_file),
                keyfile=None if settings.key_file is None else str(settings.key_file),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish

    @property
    def connected(self) -> bool:
        """True while the broker has accepted our connection."""
        return self._connected.is_set()

    def start(self) -> None:
        """Queue the outbox's leftovers, then connect in the background (paho reconnects by itself)."""
        if self._outbox is not None:
            for entry in self._outbox.pending():
                logger.info("outbox: re-sending %s left from a previous run", entry.topic)
                self._send(entry)
        self._client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> None:
        """Block until connected; TransportError after `timeout_s`."""
        if not self._connected.wait(timeout_s):
            where = f"{self._settings.host}:{self._settings.port}"
            raise TransportError(f"no connection to mqtt broker {where} after {timeout_s:g} s")

    def flush(self, timeout_s: float) -> bool:
        """Wait until every QoS>0 message published so far was acknowledged; False on timeout.

        paho drops unacknowledged messages on disconnect, so a role that publishes its last (retained)
        state right before exiting calls this first.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending_acks:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread."""
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        """Subscribe now if connected and again after every reconnect."""
        self._subscriptions[topic_filter] = qos
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, durable: bool = False
    ) -> None:
        """Publish; with `durable` the message goes through the outbox and survives a crash before PUBACK."""
        if durable and qos > 0 and self._outbox is not None:
            self._send(self._outbox.add(topic, payload, qos=qos, retain=retain))
            return
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        self._check(info.rc, f"publish to {topic}")
        if qos > 0:
            self._track(info.mid, None)

    def _send(self, entry: OutboxEntry) -> None:
        info = self._client.publish(entry.topic, entry.payload, qos=entry.qos, retain=entry.retain)
        self._check(info.rc, f"publish to {entry.topic}")
        self._track(info.mid, entry.key)

    def _track(self, mid: int, key: str | None) -> None:
        # The PUBACK can arrive on paho's thread before publish() returned here; paho holds its own
        # locks while calling back, so we must not hold ours across publish() (deadlock), hence the
        # early-ack set instead.
        with self._lock:
            acked = mid in self._early_acks
            if acked:
                self._early_acks.discard(mid)
            else:
                self._pending_acks[mid] = key
        if acked and key is not None and self._outbox is not None:
            self._outbox.remove(key)

    @staticmethod
    def _check(rc: MQTTErrorCode | int, what: str) -> None:
        # NO_CONN for QoS>0 means "queued until connected" in paho 2.x, which is what we want.
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"{what} failed: {paho.error_string(rc)}")

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: paho.ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            logger.warning(
                "mqtt connection refused by %s:%d: %s", self._settings.host, self._settings.port, reason_code
            )
            return
        for topic_filter, qos in self._subscriptions.items():
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()
        logger.info(
            "mqtt connected to %s:%d (session present: %s)",
            self._settings.host,
            self._settings.port,
            flags.session_present,
        )

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason_code: paho.ReasonCode,
        properties: object,
    ) -> None:
        self._connected.clear()
        if self._stopping:
            return
        logger.warning(
            "mqtt disconnected from %s:%d (%s); reconnecting with backoff",
            self._settings.host,
            self._settings.port,
            reason_code,
        )

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # a handler bug must not kill paho's network thread
            logger.exception("message handler failed for %s", message.topic)

    def _handle_publish(
        self, client: paho.Client, userdata: object, mid: int, reason_code: object, properties: object
    ) -> None:
        with self._lock:
            if mid not in self._pending_acks:
                self._early_acks.add(mid)
                return
            key = self._pending_acks.pop(mid)
        if key is not None and self._outbox is not None:
            self._outbox.remove(key)
