"""mosquitto 2.0 configuration and ACL files for the cloud broker and each gateway broker.

ACL design: every rule sits in an explicit `user <id>` block with the node's id written out, and there
are no `pattern` lines. A `pattern` line (with `%u`) applies to *every* authenticated user of the broker:
any device of another site (same fleet CA) or the bridge identity would gain the same rights on this
broker. Explicit blocks are the same rules with `%u` substituted at provisioning time (username = the
certificate CN, via `use_identity_as_username`), confined to the nodes that belong on this broker, and
they fail closed: a node missing from the file (revoked, or not yet provisioned) can do nothing.

Client ids are bound to the certificate too: `use_username_as_clientid` replaces whatever client id a
client sends with its username (= certificate CN), so a valid device certificate cannot connect as `g1`
and displace the gateway's session. Every node therefore connects with its node id as client id, and the
bridge's `remote_clientid` is the gateway id it authenticates as.

Retained chunk topics: a retained task or model message above the packet limit is retained chunk by chunk
on `{topic}/chunk/{i}` (docs/transport.md, "Retained chunks"). Whoever may read or write task or model
topics has the same right on their chunk topics, and the bridge carries them in; nothing else changes.
Model rights cover both the full model `model/{v}` and its quantized delta `model/{v}/delta`.

Queues: mosquitto drops QoS 1 messages for a client whose queue holds `max_queued_messages` (default 1000)
beyond the `max_inflight_messages` in flight. A message split into chunks is that many messages, so the
queue is sized for two of the largest messages at the fleet's packet limit on top of the default
(`max_queued_messages_for`); `max_inflight_messages` is written as paho's window (20).
"""

from __future__ import annotations

from dataclasses import dataclass

from fl_protocol.topics import retained_chunk_filter
from fl_protocol.wire.framing import DEFAULT_MAX_FRAME_BYTES
from fl_transport.chunking import chunk_count_bound

from .fleet import Fleet, FleetSettings

# File names inside brokers/<name>/ (the conf refers to them under settings.broker_root/<name>/).
CONF_FILE = "mosquitto.conf"
ACL_FILE = "acl"
CA_FILE = "ca.crt"
CRL_FILE = "crl.pem"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
BRIDGE_CERT = "bridge.crt"
BRIDGE_KEY = "bridge.key"
DATA_DIR = "data"
QOS = 1
MOSQUITTO_DEFAULT_QUEUED_MESSAGES = 1000
MAX_INFLIGHT_MESSAGES = 20  # paho-mqtt's default window of unacknowledged QoS 1 publishes per client
QUEUED_LARGEST_MESSAGES = 2  # e.g. a device offline while the next model and its task went out, then more


def max_queued_messages_for(max_packet_bytes: int) -> int:
    """mosquitto's per-client `max_queued_messages` for a broker with `max_packet_bytes`: room for
    QUEUED_LARGEST_MESSAGES messages of the largest frame (64 MiB) in chunks, plus the default 1000."""
    largest = chunk_count_bound(DEFAULT_MAX_FRAME_BYTES, max_packet_bytes)
    return QUEUED_LARGEST_MESSAGES * largest + MOSQUITTO_DEFAULT_QUEUED_MESSAGES


def _with_chunks(topic_filter: str) -> list[str]:
    """`topic_filter` and, for task and model filters, the filter of their retained chunk topics."""
    chunk_filter = retained_chunk_filter(topic_filter)
    return [topic_filter] if chunk_filter is None else [topic_filter, chunk_filter]


def _model_filters(prefix: str) -> list[str]:
    """The full models `model/+` and their quantized deltas `model/+/delta` (docs/update-codec.md,
    "Downlink"), each with its retained chunk topics: whoever may read or write one may the other."""
    return [*_with_chunks(f"{prefix}/model/+"), *_with_chunks(f"{prefix}/model/+/delta")]


@dataclass(frozen=True)
class BridgeSpec:
    """A gateway broker's bridge to the cloud broker."""

    gateway: str
    cloud_host: str
    cloud_port: int


def _listener_section(root: str, port: int, bind_address: str) -> list[str]:
    return [
        f"listener {port} {bind_address}".rstrip(),
        f"cafile {root}/{CA_FILE}",
        f"certfile {root}/{SERVER_CERT}",
        f"keyfile {root}/{SERVER_KEY}",
        f"crlfile {root}/{CRL_FILE}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",  # client id := certificate CN: no client-id takeover
    ]


def bridge_topics(settings: FleetSettings, gateway: str) -> list[str]:
    """Topic lines of a gateway's bridge: task, model and model delta (and their chunk topics) in, this
    gateway's partial and status out."""
    p = settings.topic_prefix
    return [
        *(f"topic {t} in {QOS}" for t in _with_chunks(f"{p}/round/+/task")),
        *(f"topic {t} in {QOS}" for t in _model_filters(p)),
        f"topic {p}/round/+/partial/{gateway} out {QOS}",
        f"topic {p}/round/+/abort/{gateway} out {QOS}",
        f"topic {p}/status/+ out {QOS}",
    ]


def _bridge_section(settings: FleetSettings, root: str, bridge: BridgeSpec) -> list[str]:
    return [
        f"connection {bridge.gateway}-to-{settings.cloud_name}",
        f"address {bridge.cloud_host}:{bridge.cloud_port}",
        "bridge_protocol_version mqttv311",
        "try_private true",  # mosquitto-to-mosquitto: retained flags are kept across the bridge
        "cleansession false",  # the cloud keeps the bridge's session: QoS 1 traffic survives a link outage
        # The cloud broker sets the client id to the certificate CN (use_username_as_clientid) anyway.
        f"remote_clientid {bridge.gateway}",
        f"bridge_cafile {root}/{CA_FILE}",
        f"bridge_certfile {root}/{BRIDGE_CERT}",
        f"bridge_keyfile {root}/{BRIDGE_KEY}",
        "bridge_insecure false",
        "notifications true",
        "notifications_local_only true",
        "restart_timeout 5 60",
        "keepalive_interval 60",
        *bridge_topics(settings, bridge.gateway),
    ]


def render_conf(settings: FleetSettings, name: str, *, port: int, bridge: BridgeSpec | None) -> str:
    """The mosquitto.conf of broker `name`: one TLS listener with client certificates and the CRL,
    ACL file, packet size limit and queue sized for it, persistence, and (gateway brokers) the bridge."""
    root = f"{settings.broker_root}/{name}"
    lines = [
        f"# mosquitto 2.0 configuration of broker {name!r}, fleet {settings.fleet!r}.",
        "# Generated by `fedlora provision`; paths assume this directory is installed at",
        f"# {root}/ (see docs/provisioning.md). Regenerated on --revoke / --add-devices.",
        f"user {settings.broker_user}",  # started as root, mosquitto drops to this user: it owns {root}
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {root}/{ACL_FILE}",
        f"max_packet_size {settings.max_packet_bytes}",
        f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
        f"max_queued_messages {max_queued_messages_for(settings.max_packet_bytes)}",
        "persistence true",
        f"persistence_location {root}/{DATA_DIR}/",
        "autosave_interval 300",
        "connection_messages true",
        "",
        *_listener_section(root, port, settings.bind_address(name)),
    ]
    if bridge is not None:
        lines += ["", *_bridge_section(settings, root, bridge)]
    return "\n".join(lines) + "\n"


def _acl_header(settings: FleetSettings, name: str) -> list[str]:
    return [
        f"# ACL of broker {name!r}, fleet {settings.fleet!r}, generated by `fedlora provision`.",
        "# Username = client certificate CN (use_identity_as_username). Explicit per-user blocks, no",
        "# `pattern` lines: patterns would apply to every user of this broker (docs/provisioning.md).",
    ]


def render_cloud_acl(fleet: Fleet) -> str:
    """ACL of the cloud broker: the cloud publishes tasks and models and reads partials and status;
    each gateway (its bridge) reads tasks and models and writes its own partial and its site's status."""
    s = fleet.settings
    p = s.topic_prefix
    lines = _acl_header(s, s.cloud_name)
    for cloud in fleet.active("cloud"):
        lines += [
            "",
            f"user {cloud.id}",
            *(f"topic write {t}" for t in _with_chunks(f"{p}/round/+/task")),
            *(f"topic write {t}" for t in _model_filters(p)),
            f"topic read {p}/round/+/partial/+",
            f"topic read {p}/round/+/abort/+",
            f"topic readwrite {p}/status/{cloud.id}",
            f"topic read {p}/status/+",
        ]
    for gw in fleet.active("gateway"):
        lines += [
            "",
            f"user {gw.id}",
            *(f"topic read {t}" for t in _with_chunks(f"{p}/round/+/task")),
            *(f"topic read {t}" for t in _model_filters(p)),
            f"topic write {p}/round/+/partial/{gw.id}",
            f"topic write {p}/round/+/abort/{gw.id}",
            f"topic write {p}/status/{gw.id}",
        ]
        lines += [f"topic write {p}/status/{dev.id}" for dev in fleet.devices_of(gw.id)]
    return "\n".join(lines) + "\n"


def render_gateway_acl(fleet: Fleet, gateway: str) -> str:
    """Gateway `gateway`'s broker ACL (docs/provisioning.md): the gateway reads its devices' stage uploads and
    writes stage topics, routed inboxes and its partial; each of its devices writes only under its own
    id and reads tasks, models, its gateway's stage topics and its own inbox."""
    s = fleet.settings
    p = s.topic_prefix
    g = f"{p}/gw/{gateway}"
    lines = _acl_header(s, gateway)
    if any(n.id == gateway for n in fleet.active("gateway")):
        lines += [
            "",
            f"user {gateway}",
            *(f"topic read {t}" for t in _with_chunks(f"{p}/round/+/task")),
            *(f"topic read {t}" for t in _model_filters(p)),
            f"topic read {g}/round/+/+/+",
            f"topic write {g}/round/+/+",
            f"topic write {g}/inbox/+",
            f"topic readwrite {p}/round/+/partial/{gateway}",
            f"topic readwrite {p}/round/+/abort/{gateway}",
            f"topic readwrite {p}/status/{gateway}",
            f"topic read {p}/status/+",
        ]
    for dev in fleet.devices_of(gateway):
        lines += [
            "",
            f"user {dev.id}",
            f"topic write {g}/round/+/+/{dev.id}",
            f"topic readwrite {p}/status/{dev.id}",
            f"topic read {p}/status/{gateway}",
            *(f"topic read {t}" for t in _with_chunks(f"{p}/round/+/task")),
            *(f"topic read {t}" for t in _model_filters(p)),
            f"topic read {g}/round/+/+",
            f"topic read {g}/inbox/{dev.id}",
        ]
    return "\n".join(lines) + "\n"
