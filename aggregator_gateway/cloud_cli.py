"""`fedlora cloud --config cloud.toml`: the cloud role (round scheduler, root aggregator, status page).

The module top imports only the standard library so `fedlora --help` stays cheap; the role's modules are
imported in `run`. Exit codes: 0 every planned round completed; 1 a fedlora error, or a round failed more
than `max_retries` times in a row (see the log and rounds.json); 130 interrupted (fedlora.cli).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
FLUSH_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the cloud's arguments."""
    parser.add_argument("--config", type=Path, required=True, help="cloud.toml (see docs/cloud.md)")


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
    from fl_protocol.config import load_fleet_keys, load_signing_key
    from fl_protocol.identity import NodeIdentity
    from fl_protocol.topics import cloud_partial_filter, status_filter, status_topic
    from fl_protocol.wire.messages import Status
    from fl_transport.loop import EventLoop
    from fl_transport.mqtt import MqttConnection, MqttSettings, Will

    config = CloudConfig.load(args.config)
    initial, bundle_id = _load_initial_vector(config.cloud.bundle_dir)
    node = config.node
    identity = NodeIdentity(
        node.id,
        node.fleet,
        load_signing_key(config.identity.signing_key_file),
        load_fleet_keys(config.identity.fleet_keys_file),
        clock_ms=_clock_ms,
    )
    store = ModelStore(config.cloud.store_dir, bundle_id=bundle_id)
    holder: dict[str, CloudCoordinator] = {}
    loop = EventLoop(
        lambda topic, payload: holder["c"].handle(topic, payload), tick=lambda: holder["c"].tick()
    )
    b = config.broker
    will = Will(
        status_topic(node.fleet, node.id),
        identity.encode(Status(node.id, "offline", "connection lost", _clock_ms()), round_id=0),
    )
    connection = MqttConnection(MqttSettings.from_broker(b, node.id), loop.submit, will=will)
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
    page = None
    if config.cloud.http_port:
        page = StatusPage(coordinator.snapshot, host=config.cloud.http_host, port=config.cloud.http_port)
        page.start()
    connection.subscribe(cloud_partial_filter(node.fleet))
    connection.subscribe(status_filter(node.fleet))
    connection.start()
    try:
        connection.wait_connected(CONNECT_TIMEOUT_S)
        coordinator.start()
        loop.run(until=lambda: coordinator.done)
        # paho drops unacknowledged QoS 1 messages on disconnect: the final model and status must be out.
        if not connection.flush(FLUSH_TIMEOUT_S):
            logger.warning("final publishes not confirmed by the broker within %.0f s", FLUSH_TIMEOUT_S)
    finally:
        connection.stop()
        if page is not None:
            page.stop()
        store.close()
    logger.info("cloud finished: %s", "every round completed" if coordinator.succeeded else "FAILED")
    return 0 if coordinator.succeeded else 1
