"""`fedlora cloud --config cloud.toml`: the cloud role (round scheduler, root aggregator, status page).

The module top imports only the standard library so `fedlora --help` stays cheap; the role's modules are
imported in `run`. Exit codes: 0 every planned round completed; 1 a fedlora error, or a round failed more
than `max_retries` times in a row (see the log and rounds.json); 130 interrupted (fedlora.cli).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the module top stays standard-library only at run time
    from aggregator_gateway.cloud.config import CloudConfig
    from aggregator_gateway.cloud.coordinator import CloudCoordinator
    from fl_protocol.identity import NodeIdentity
    from fl_transport.loop import EventLoop
    from fl_transport.mqtt import MqttConnection

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 10.0
RETAINED_CHUNKS_FILE = "retained_chunks.json"  # in store_dir (docs/transport.md, "Retained chunks")
LOG_LEVELS = ("debug", "info", "warning", "error")


# One line in `fedlora --help` and this command's description (fl_transport/command.py).
HELP = "run the cloud: rounds, root aggregation, server optimizer, model store, status page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the cloud's arguments."""
    parser.add_argument("--config", type=Path, required=True, help="cloud.toml (see docs/cloud.md)")
    add_log_level_argument(parser)


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    """`--log-level` of the long-running roles (cloud, gateway): lifecycle lines at INFO by default."""
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="log level (default: info; -vv: debug)"
    )


def apply_log_level(args: argparse.Namespace) -> None:
    """Lower the root logger to `--log-level` (fedlora's `-v` flags may lower it further, never raise)."""
    root = logging.getLogger()
    wanted = getattr(logging, str(getattr(args, "log_level", "info")).upper())
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(min(root.level or logging.WARNING, wanted))


def warn_tier_mismatch(config: Any) -> list[str]:
    """Warn (and return the lines) when the task's settings break the default policy of its built-in
    tier: devices keeping that default would sit out every round (docs/operations.md)."""
    from fl_protocol.dp.tiers import TierConfig

    privacy = config.privacy
    policy = TierConfig().policies.get(privacy.tier)
    lines = []
    if policy is not None:
        if privacy.clip_norm > policy.max_clip_norm:
            lines.append(f"clip_norm {privacy.clip_norm} > the tier's max_clip_norm {policy.max_clip_norm}")
        noise = privacy.noise_multiplier
        if privacy.mechanism != "none" and noise is not None and noise < policy.min_noise_multiplier:
            lines.append(
                f"noise_multiplier {noise} < the tier's min_noise_multiplier {policy.min_noise_multiplier}"
            )
        if privacy.mechanism == "none" and policy.min_noise_multiplier > 0:
            lines.append(
                f"mechanism 'none' (no noise) but the tier needs noise >= {policy.min_noise_multiplier}"
            )
        target = privacy.target_epsilon
        if target is not None and target > policy.epsilon_budget:
            lines.append(f"target_epsilon {target} > the tier's epsilon_budget {policy.epsilon_budget}")
    for line in lines:
        logger.warning(
            "[privacy] tier %r: %s; devices with the default policy of that tier refuse these rounds",
            privacy.tier,
            line,
        )
    return lines


def _clock_ms() -> int:
    return int(time.time() * 1000)


def _load_initial_vector(bundle_dir: Path) -> tuple[Any, str]:
    """(initial float32 vector, bundle id) of the bundle; its length must equal the manifest's."""
    from fl_protocol.errors import ConfigError
    from fl_protocol.flatvec import load_flat_vector
    from fl_protocol.manifest import load_manifest

    manifest = load_manifest(bundle_dir)
    name = manifest.raw.get("artifacts", {}).get("initial_vector", "initial_vector.safetensors")
    flat = load_flat_vector(manifest.path(name), expected_bundle_id=manifest.bundle_id)
    if flat.values.shape != (manifest.total_length,):
        raise ConfigError(
            f"{name} holds {flat.values.size} values, the manifest says {manifest.total_length}"
        )
    return flat.values, manifest.bundle_id


def run(args: argparse.Namespace) -> int:
    """Run every round of the federation; see the module docstring for the exit code."""
    from aggregator_gateway.cloud.config import CloudConfig
    from aggregator_gateway.cloud.coordinator import CloudCoordinator
    from aggregator_gateway.cloud.status_page import StatusPage
    from aggregator_gateway.cloud.store import ModelStore
    from fl_transport.loop import EventLoop

    apply_log_level(args)
    config = CloudConfig.load(args.config)
    warn_tier_mismatch(config)
    initial, bundle_id = _load_initial_vector(config.cloud.bundle_dir)
    identity = _node_identity(config)
    store = ModelStore(config.cloud.store_dir, bundle_id=bundle_id)
    holder: dict[str, CloudCoordinator] = {}
    loop = EventLoop(
        lambda topic, payload: holder["c"].handle(topic, payload), tick=lambda: holder["c"].tick()
    )
    connection = _connection(config, identity, loop.submit)
    coordinator = CloudCoordinator(
        config,
        identity=identity,
        publisher=connection,
        store=store,
        initial_vector=initial,
        bundle_id=bundle_id,
        clock_ms=_clock_ms,
    )
    holder["c"] = coordinator
    page = _start_status_page(
        StatusPage, coordinator.snapshot, config.cloud.http_host, config.cloud.http_port
    )
    _subscribe(connection, config.node.fleet)
    connection.start()
    node, b = config.node, config.broker
    logger.info(
        "cloud %s of fleet %s: %d round(s), gateways %s, broker %s:%d",
        node.id,
        node.fleet,
        config.cloud.rounds,
        ", ".join(config.cloud.gateways),
        b.host,
        b.port,
    )
    try:
        _run_rounds(connection, coordinator, loop)
    finally:
        connection.stop()
        if page is not None:
            page.stop()
        store.close()
    logger.info("cloud finished: %s", "every round completed" if coordinator.succeeded else "FAILED")
    return 0 if coordinator.succeeded else 1


def _node_identity(config: CloudConfig) -> NodeIdentity:
    """The cloud's NodeIdentity from [node] and [identity] (ConfigError if a key file is unusable)."""
    from fl_protocol.config import load_fleet_keys, load_signing_key
    from fl_protocol.identity import NodeIdentity

    return NodeIdentity(
        config.node.id,
        config.node.fleet,
        load_signing_key(config.identity.signing_key_file),
        load_fleet_keys(config.identity.fleet_keys_file),
        clock_ms=_clock_ms,
    )


def _connection(
    config: CloudConfig, identity: NodeIdentity, submit: Callable[[str, bytes], None]
) -> MqttConnection:
    """The MQTT connection to the cloud broker (not started), with an `offline` Status as its will."""
    from fl_protocol.stages import NodeState
    from fl_protocol.topics import status_topic
    from fl_protocol.wire.messages import Status
    from fl_transport.chunking import ChunkCodec
    from fl_transport.mqtt import MqttConnection, MqttSettings, Will
    from fl_transport.retained_chunks import RetainedChunkLedger

    node = config.node
    will = Will(
        status_topic(node.fleet, node.id),
        identity.encode(Status(node.id, NodeState.OFFLINE.value, "connection lost", _clock_ms()), round_id=0),
    )
    return MqttConnection(
        MqttSettings.from_broker(config.broker, node.id),
        submit,
        will=will,
        chunking=ChunkCodec.for_identity(identity),
        # which retained chunk topics of tasks and models are filled, so a restart can clear them
        retained_chunks=RetainedChunkLedger(config.cloud.store_dir / RETAINED_CHUNKS_FILE),
    )


def _subscribe(connection: MqttConnection, fleet: str) -> None:
    """Partials, gateway aborts and every node's status."""
    from fl_protocol.topics import cloud_abort_filter, cloud_partial_filter, status_filter

    connection.subscribe(cloud_partial_filter(fleet))
    connection.subscribe(cloud_abort_filter(fleet))
    connection.subscribe(status_filter(fleet))


def _run_rounds(connection: MqttConnection, coordinator: CloudCoordinator, loop: EventLoop) -> None:
    """Connect, start the coordinator, run its event loop until the run is done, flush the last publishes."""
    connection.wait_connected(CONNECT_TIMEOUT_S)
    logger.info("connected to the broker")
    coordinator.start()
    loop.run(until=lambda: coordinator.done)
    # paho drops unacknowledged QoS 1 messages on disconnect: the final model and status must be out.
    if not connection.flush(FLUSH_TIMEOUT_S):
        logger.warning("final publishes not confirmed by the broker within %.0f s", FLUSH_TIMEOUT_S)


def _start_status_page(page_class: Any, snapshot: Any, host: str, port: int) -> Any:
    """The status page on host:port, or None when port is 0 or cannot be bound (logged; the run goes on)."""
    if not port:
        logger.info("status page off ([cloud] http_port = 0)")
        return None
    try:
        page = page_class(snapshot, host=host, port=port)
    except OSError as exc:
        logger.warning("status page not started: cannot listen on %s:%d (%s)", host, port, exc)
        return None
    page.start()
    return page
