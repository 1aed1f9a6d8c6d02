"""A `Gateway` under test with no broker: what it publishes is appended to a list, time is a manual
clock, and the cloud's task reaches it as a signed frame on the task topic."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aggregator_gateway.gateway.config import GatewaySection
from aggregator_gateway.gateway.gateway import Gateway
from aggregator_gateway.gateway.store import RoundStore
from fl_protocol.topics import parse_topic, task_topic
from fl_protocol.wire.messages import RoundTask
from tests.kit.fleet import CLOUD, FLEET, GATEWAY, ManualClock, identity

Sent = list[tuple[str, bytes]]


def make_gateway(
    tmp_path: Path,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    devices: Iterable[str],
    clock: ManualClock,
    sent: Sent,
    seed_bytes: Callable[[int], bytes] = os.urandom,
    **settings: object,
) -> Gateway:
    """Gateway GATEWAY of FLEET with its store in `tmp_path`/s.sqlite3 (reopened if it exists, as after
    a restart), expecting `devices`; `settings` are GatewaySection fields (resume_grace_s defaults to 0)."""
    section = GatewaySection(**{"resume_grace_s": 0.0, **settings})  # type: ignore[arg-type]
    return Gateway(
        identity=identity(GATEWAY, keys, clock_ms=clock),
        settings=section,
        expected_devices=frozenset(devices),
        store=RoundStore(tmp_path / "s.sqlite3"),
        publish=lambda topic, payload: sent.append((topic, payload)),
        clock_ms=clock,
        seed_bytes=seed_bytes,
    )


def send_task(
    gateway: Gateway, task: RoundTask, keys: Mapping[str, Ed25519PublicKey], sender: str = CLOUD
) -> None:
    """Hand `gateway` `task` as `sender` signed it, on the task topic (errors propagate: the event loop
    would log and drop them)."""
    frame = identity(sender, keys).encode(task, round_id=task.round_id)
    gateway.handle(parse_topic(task_topic(FLEET, task.round_id)), frame)
