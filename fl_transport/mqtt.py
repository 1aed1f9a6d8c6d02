"""One MQTT connection per node: TLS, QoS 1, persistent session, reconnect with backoff, LWT, outbox,
packet-size limit and chunking.

paho-mqtt 2.x with `CallbackAPIVersion.VERSION2`. paho's return codes are turned into exceptions here
and nowhere else. Incoming messages are handed to one callback from paho's network thread; roles put
them on a queue and process them on their own thread, so protocol state is single-threaded.

MQTT 5 is spoken by default: its CONNACK tells the broker's maximum packet size. A broker that answers
"unsupported protocol version" gets MQTT 3.1.1 on the next attempt, the same downgrade paho itself does
from 3.1.1 to 3.1; a broker that hangs on an MQTT 5 CONNECT instead (the demo's embedded amqtt) needs
`mqtt_version = "3.1.1"` in `[broker]`. Under 3.1.1 the limit comes from `max_packet_bytes` in `[broker]`.
A message whose packet would exceed the limit is split into signed chunks (fl_transport.packets) when the
connection has a `ChunkCodec`, and refused with a TransportError otherwise: never handed to the broker,
which would drop the connection and get it again on every reconnect. A retained task or model message
that needs chunks goes to retained chunk topics (fl_transport.retained_chunks); subscribing to task or
model topics subscribes to their chunk topics too, and the whole message is handed on under its own topic.
Until the first CONNACK the limit may be unknown; publishes made then wait (in order) for it.
The PUBACK bookkeeping (which packets await one, when an outbox entry is done) is fl_transport/acks.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fl_protocol.errors import DecodeError
from fl_protocol.topics import is_retained_chunk_topic, parse_retained_chunk_topic, retained_chunk_filter
from fl_protocol.wire.chunks import is_chunk_frame
from fl_transport.acks import AckTracker
from fl_transport.chunking import ChunkCodec
from fl_transport.outbox import Outbox
from fl_transport.packets import Outgoing, plan, refusal
from fl_transport.retained_chunks import Packet, RetainedChunkLedger
from fl_transport.settings import MqttSettings, TransportError, Will, publish_packet_bytes
from fl_transport.tls import TlsDiagnostics

__all__ = [
    "MessageHandler",
    "MqttConnection",
    "MqttSettings",
    "TransportError",
    "Will",
    "publish_packet_bytes",
]

logger = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]

_UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason code (MQTT 5) / return code 1 (3.1.1) as paho maps it
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF


class MqttConnection:
    """A connected (or reconnecting) MQTT client with an optional on-disk outbox and chunking;
    `retained_chunks`: the record of retained chunk topics filled (default: in memory, this process)."""

    def __init__(
        self,
        settings: MqttSettings,
        on_message: MessageHandler,
        *,
        will: Will | None = None,
        outbox: Outbox | None = None,
        chunking: ChunkCodec | None = None,
        retained_chunks: RetainedChunkLedger | None = None,
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._outbox = outbox
        self._chunking = chunking
        self._retained = retained_chunks if retained_chunks is not None else RetainedChunkLedger()
        self._subscriptions: dict[str, int] = {}
        self._dropped: set[str] = set()  # unsubscribed while disconnected: told to the broker on connect
        self._lock = threading.Lock()
        self._acks = AckTracker(self._entry_acknowledged)
        self._held: list[Outgoing] = []  # published before the packet limit was known
        self._limit_known = settings.max_packet_bytes is not None
        self._max_packet_bytes = settings.max_packet_bytes
        self._connected = threading.Event()
        self._stopping = False
        self._tls = TlsDiagnostics(f"{settings.host}:{settings.port}")
        if settings.mqtt_version == "5":
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=paho.MQTTv5
            )
        else:
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
            self._client.tls_set_context(
                self._tls.context(settings.ca_file, settings.cert_file, settings.key_file)
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

    @property
    def max_packet_bytes(self) -> int | None:
        """The broker's packet limit as learned (CONNACK) or configured; None while unknown or unlimited."""
        return self._max_packet_bytes

    def start(self) -> None:
        """Queue the outbox's leftovers, then connect in the background (paho reconnects by itself)."""
        if self._outbox is not None:
            for entry in self._outbox.pending():
                logger.info("outbox: re-sending %s left from a previous run", entry.topic)
                self._submit(Outgoing(entry.topic, entry.payload, entry.qos, entry.retain, entry.key))
        if self._mqtt5:
            properties = Properties(PacketTypes.CONNECT)
            if not self._settings.clean_session:
                properties.SessionExpiryInterval = _SESSION_NEVER_EXPIRES  # as a 3.1.1 persistent session
            self._client.connect_async(
                self._settings.host,
                self._settings.port,
                self._settings.keepalive_s,
                clean_start=self._settings.clean_session,
                properties=properties,
            )
        else:
            self._client.connect_async(self._settings.host, self._settings.port, self._settings.keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout_s: float) -> None:
        """Block until connected; TransportError after `timeout_s` (with the TLS reason, if TLS failed)."""
        if not self._connected.wait(timeout_s):
            where = f"{self._settings.host}:{self._settings.port}"
            reason = self._tls.last_reason
            suffix = f": {reason}" if reason else ""
            raise TransportError(f"no connection to mqtt broker {where} after {timeout_s:g} s{suffix}")

    def flush(self, timeout_s: float) -> bool:
        """Wait until every QoS>0 message published so far was acknowledged; False on timeout.

        paho drops unacknowledged messages on disconnect, so a role that publishes its last (retained)
        state right before exiting calls this first.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                held = bool(self._held)
            if not held and not self._acks.outstanding:
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
        """Subscribe now if connected and again after every reconnect; a filter of task or model topics
        brings its retained chunk topics (`{filter}/chunk/+`) along."""
        chunk_filter = retained_chunk_filter(topic_filter)
        for each in (topic_filter, chunk_filter):
            if each is not None:
                with self._lock:
                    self._subscriptions[each] = qos
                    self._dropped.discard(each)
                if self.connected:
                    self._client.subscribe(each, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        """Undo `subscribe(topic_filter)` (its retained chunk filter too): at once if connected, else on
        the next connect (a persistent session keeps subscriptions); never re-subscribed after that."""
        chunk_filter = retained_chunk_filter(topic_filter)
        for each in (topic_filter, chunk_filter):
            if each is None:
                continue
            with self._lock:
                self._subscriptions.pop(each, None)
                if not self.connected:
                    self._dropped.add(each)
            if self.connected:
                self._client.unsubscribe(each)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, durable: bool = False
    ) -> None:
        """Publish; with `durable` the message goes through the outbox and survives a crash before PUBACK.

        A message above the broker's packet limit is sent as signed chunks (with a ChunkCodec), else
        TransportError. Before the first CONNACK (limit unknown) the message waits for it; one that the
        learned limit then rules out is logged at ERROR (the caller has returned by then).
        """
        # Refuse at once whatever the known limit rules out: nothing unsendable goes into the outbox, and a
        # publish made between the CONNACK and the release of held messages is not deferred to a log line.
        reason = refusal(
            topic, len(payload), qos=qos, retain=retain, limit=self._max_packet_bytes, mqtt5=self._mqtt5,
            can_chunk=self._chunking is not None,
        )  # fmt: skip
        if reason is not None:
            raise TransportError(reason)
        if durable and qos > 0 and self._outbox is not None:
            entry = self._outbox.add(topic, payload, qos=qos, retain=retain)
            self._submit(Outgoing(topic, payload, qos, retain, entry.key))
            return
        self._submit(Outgoing(topic, payload, qos, retain, None))

    def _submit(self, item: Outgoing) -> None:
        with self._lock:
            if not self._limit_known:
                self._held.append(item)
                return
        self._send(item)

    @property
    def _mqtt5(self) -> bool:
        return bool(self._client.protocol == paho.MQTTv5)

    def _send(self, item: Outgoing) -> None:
        try:
            sending = plan(
                item, limit=self._max_packet_bytes, mqtt5=self._mqtt5, chunking=self._chunking,
                ledger=self._retained,
            )  # fmt: skip
        except TransportError:
            if item.key is not None and self._outbox is not None:
                self._outbox.set_aside(item.key, "oversize")
            raise
        self._send_packets(item, sending.packets)
        if sending.retained_chunks is not None:
            self._retained.set(item.topic, sending.retained_chunks)

    def _send_packets(self, item: Outgoing, packets: list[Packet]) -> None:
        if item.key is not None and item.qos > 0:
            self._acks.expect(item.key, len(packets))
        for topic, payload in packets:
            info = self._client.publish(topic, payload, qos=item.qos, retain=item.retain)
            self._check(info.rc, f"publish to {topic}")
            if item.qos > 0:
                self._acks.published(info.mid, item.key)

    def _entry_acknowledged(self, key: str) -> None:
        """Every packet of outbox entry `key` was acknowledged: it leaves the outbox."""
        if self._outbox is not None:
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
            if reason_code.value == _UNSUPPORTED_PROTOCOL_VERSION and client.protocol == paho.MQTTv5:
                self._downgrade(client)
                return
            logger.warning(
                "mqtt connection refused by %s:%d: %s", self._settings.host, self._settings.port, reason_code
            )
            return
        self._tls.connected()
        self._learn_limit(properties)
        with self._lock:
            subscriptions, dropped = list(self._subscriptions.items()), sorted(self._dropped)
            self._dropped.clear()
        for topic_filter in dropped:  # a persistent session still holds them
            client.unsubscribe(topic_filter)
        for topic_filter, qos in subscriptions:
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()
        logger.info(
            "mqtt connected to %s:%d (MQTT %s, session present: %s, packet limit: %s)",
            self._settings.host,
            self._settings.port,
            "5" if self._mqtt5 else "3.1.1",
            flags.session_present,
            self._max_packet_bytes or "none",
        )
        self._release_held()

    def _downgrade(self, client: paho.Client) -> None:
        # The broker does not speak MQTT 5: retry with 3.1.1, as paho itself falls back from 3.1.1 to 3.1
        # (it sets the same private attribute); its next reconnect sends a 3.1.1 CONNECT.
        logger.info(
            "broker %s:%d does not speak MQTT 5; using MQTT 3.1.1", self._settings.host, self._settings.port
        )
        client._protocol = paho.MQTTv311  # noqa: SLF001
        client._clean_session = self._settings.clean_session  # noqa: SLF001

    def _learn_limit(self, properties: object) -> None:
        learned = getattr(properties, "MaximumPacketSize", None) if self._mqtt5 else None
        configured = self._settings.max_packet_bytes
        limits = [v for v in (learned, configured) if isinstance(v, int) and v > 0]
        with self._lock:
            self._max_packet_bytes = min(limits) if limits else None

    def _release_held(self) -> None:
        """Send what waited for the limit, in order; publishes made meanwhile queue behind it."""
        while True:
            with self._lock:
                if not self._held:
                    self._limit_known = True
                    return
                item = self._held.pop(0)
            try:
                self._send(item)
            except TransportError as exc:
                logger.error("message not sent: %s", exc)

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
        tls_reason = self._tls.last_reason
        logger.warning(
            "mqtt disconnected from %s:%d (%s%s); reconnecting with backoff",
            self._settings.host,
            self._settings.port,
            reason_code,
            f"; {tls_reason}" if tls_reason else "",
        )

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            delivered = self._whole_message(message.topic, bytes(message.payload))
            if delivered is not None:
                self._on_message(*delivered)
        except Exception:  # a handler bug must not kill paho's network thread
            logger.exception("message handler failed for %s", message.topic)

    def _whole_message(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """(topic, message) to hand on; None while chunks are missing or for an ignored packet. A message
        from retained chunk topics is handed on under its own topic."""
        if is_retained_chunk_topic(topic):
            if not payload:
                return None  # a cleared chunk topic
            try:
                topic, index = parse_retained_chunk_topic(topic)
            except DecodeError:
                logger.warning("ignored message on unexpected chunk topic %s", topic)
                return None
            whole = self._reassemble(topic, payload, index=index)
        elif is_chunk_frame(payload):
            whole = self._reassemble(topic, payload)
        else:
            return topic, payload
        return None if whole is None else (topic, whole)

    def _reassemble(self, topic: str, payload: bytes, *, index: int | None = None) -> bytes | None:
        if self._chunking is None:
            logger.warning("chunk on %s ignored: this connection has no chunk keys", topic)
            return None
        try:
            return self._chunking.receive(topic, payload, index=index)
        except DecodeError:
            logger.warning("ignored chunk on %s: invalid, unsigned or wrongly signed", topic)
            return None

    def _handle_publish(
        self, client: paho.Client, userdata: object, mid: int, reason_code: object, properties: object
    ) -> None:
        if getattr(reason_code, "is_failure", False):  # MQTT 5 only: 3.1.1 has no negative PUBACK
            logger.warning("broker refused a publish (message id %d): %s", mid, reason_code)
        self._acks.acknowledged(mid)
