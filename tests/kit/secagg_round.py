"""Device updates and an in-memory SecAgg+ round for gateway tests: real `SecAggClient` objects played
against a `RoundDriver`, no broker (tests/integration/test_gateway.py wraps the same clients in MQTT
connections).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from aggregator_gateway.gateway.rounds import Outgoing, RoundDriver
from fl_protocol.codec.pipeline import decode_sum, encode_update
from fl_protocol.codec.quantize import from_ring, to_ring
from fl_protocol.secagg import (
    Roster,
    RoutedShares,
    SecAggClient,
    Survivors,
    UnmaskRequest,
)
from fl_protocol.secagg.simulate import deterministic_rng
from fl_protocol.stages import Stage
from fl_protocol.wire.messages import RoundTask
from tests.kit.fleet import FLEET, GATEWAY, signing_key


def device_update(node: str, task: RoundTask, *, scale: float = 1.0) -> np.ndarray:
    """A device's encoded (ring) update for `task`: a random delta of norm 0.8 × `scale`, clipped at 1."""
    seed = int.from_bytes(hashlib.sha256(f"{node}/{task.round_id}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    delta = rng.standard_normal(task.model_dimension)
    delta *= 0.8 * scale / np.linalg.norm(delta)
    return encode_update(delta, residual=None, settings=task.codec, rng=rng).ring_values


def trusted_updates(
    task: RoundTask, names: Iterable[str], *, poisoned: Iterable[str] = (), factor: float = 20.0
) -> dict[str, np.ndarray]:
    """Encoded updates for a trusted round: honest devices share a direction (norm 0.6) plus their own
    perturbation (norm 0.1); a poisoned device skips its clip and sends `factor` × its honest values."""
    base = np.random.default_rng(7).standard_normal(task.model_dimension)
    base *= 0.6 / np.linalg.norm(base)
    bad = set(poisoned)
    updates: dict[str, np.ndarray] = {}
    for node in names:
        seed = int.from_bytes(hashlib.sha256(f"trusted/{node}/{task.round_id}".encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(task.model_dimension)
        delta = base + 0.1 * noise / np.linalg.norm(noise)
        ring = encode_update(delta, residual=None, settings=task.codec, rng=rng).ring_values
        if node in bad:
            ring = to_ring(np.round(factor * from_ring(ring, task.codec.ring_bits)), task.codec.ring_bits)
        updates[node] = ring
    return updates


def decoded_updates(task: RoundTask, updates: dict[str, np.ndarray]) -> np.ndarray:
    """[n, d] float64: each update decoded on its own (sorted by device id)."""
    return np.stack(
        [
            decode_sum(updates[n], count=1, settings=task.codec, dimension=task.model_dimension)
            for n in sorted(updates)
        ]
    )


def plain_sum(task: RoundTask, updates: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ring sum mod 2^b, decoded float64 sum) of the devices' plain encoded updates."""
    stack = list(updates)
    ring = np.sum(np.stack(stack).astype(np.uint64), axis=0) & np.uint64((1 << task.codec.ring_bits) - 1)
    ring32 = ring.astype(np.uint32)
    return ring32, decode_sum(ring32, count=len(stack), settings=task.codec, dimension=task.model_dimension)


def make_client(node: str, task: RoundTask, keys: dict[str, Ed25519PublicKey]) -> SecAggClient:
    """A real SecAgg+ client of `node` for `task`'s round with the gateway GATEWAY."""
    return SecAggClient(
        node,
        gateway_id=GATEWAY,
        fleet=FLEET,
        round_id=task.round_id,
        identity_key=signing_key(node),
        verify_key=keys.get,
        model_hash=task.model_sha256,
        rng_bytes=deterministic_rng(f"{node}/{task.round_id}".encode()),
    )


def deliver(
    driver: RoundDriver,
    outgoing: list[Outgoing],
    clients: dict[str, SecAggClient],
    updates: dict[str, np.ndarray],
    *,
    drop_before: set[str],
    drop_after: set[str],
) -> None:
    """Hand each outgoing message to the clients it concerns and their answers back to the driver.

    A client only sees stage broadcasts that name it (the rule devices follow when a gateway runs groups)."""
    for item in outgoing:
        message = item.message
        if isinstance(message, RoutedShares):
            client = clients[message.recipient]
            client.on_routed_shares(message)
            if message.recipient not in drop_before:
                driver.accept(Stage.MASKED, client.mask(updates[message.recipient]))
        elif isinstance(message, Roster):
            for member in message.members:
                answer = clients[member.sender].on_roster(message)
                driver.accept(Stage.SHARES, answer)  # type: ignore[arg-type]
        elif isinstance(message, Survivors):
            for node in message.survivors:
                if node not in drop_after:
                    driver.accept(Stage.CONSISTENCY, clients[node].on_survivors(message))  # type: ignore[arg-type]
        elif isinstance(message, UnmaskRequest):
            for node in message.signatures:
                driver.accept(Stage.UNMASK, clients[node].on_unmask_request(message))  # type: ignore[arg-type]


def run_in_memory(
    driver: RoundDriver,
    clients: dict[str, SecAggClient],
    updates: dict[str, np.ndarray],
    *,
    drop_before: Iterable[str] = (),
    drop_after: Iterable[str] = (),
) -> None:
    """Advertise every client, then close stage after stage until the driver finishes."""
    for client in clients.values():
        driver.accept(Stage.ADVERTISE, client.advertise())
    while not driver.finished:
        deliver(
            driver, driver.close(), clients, updates, drop_before=set(drop_before), drop_after=set(drop_after)
        )
