"""One gateway's cohort in one round, in memory: real SecAgg+ clients against the gateway's `RoundDriver`.

Every device message is framed and signed exactly as a device publishes it (`encode_message`), its size
is measured, and the gateway side decodes and verifies the frame (`decode_message`) before accepting it,
as `fedlora gateway` does; only the broker is missing. Gateway-to-device messages are handed over as
objects (their bytes are downlink and not on the device's critical uplink).

Dropouts: devices in `vanished` advertise and share keys, then never upload (the gateway recovers their
pairwise masks from the survivors' shares); devices in `late` mask and send, but after the deadline, so
the gateway never accepts their update (same effect on the protocol).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aggregator_gateway.gateway.cohort_driver import StageMessage
from aggregator_gateway.gateway.rounds import Outgoing, RoundDriver, RoundResult
from fl_protocol.codec.pipeline import codec_chain_text
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import (
    ConsistencySignature,
    MaskedUpdate,
    Roster,
    RoutedShares,
    SecAggClient,
    ShareKeys,
    Survivors,
    UnmaskRequest,
    UnmaskShares,
)
from fl_protocol.secagg.simulate import deterministic_rng
from fl_protocol.topics import Stage
from fl_protocol.wire.envelope import decode_message, encode_message
from fl_protocol.wire.messages import RoundTask

logger = logging.getLogger(__name__)

FLEET = "simfleet"
CREATED_MS = 1_700_000_000_000  # a fixed frame timestamp: reports are reproducible byte for byte
AnswerT = TypeVar("AnswerT", bound=StageMessage)


def identity_key(name: str, seed: int) -> Ed25519PrivateKey:
    """A node's Ed25519 identity in the simulation (derived from the seed; never a production key)."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"fedlora/sim/{seed}/{name}".encode()).digest()
    )


@dataclass
class CohortOutcome:
    """What happened at one gateway: the unmasked sum and the measured frames.

    `ring_sum` is the gateway's unmasked sum mod 2^b (None when the cohort aborted); `masked_inputs` the
    ring values each accepted survivor masked (exposed for tests: their sum mod 2^b must equal ring_sum);
    `update_frame_bytes` and `control_frame_bytes` the measured uplink frame sizes per device.
    """

    gateway: str
    selected: tuple[str, ...]
    result: RoundResult | None = None
    aborted: str = ""
    masked_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    update_frame_bytes: dict[str, int] = field(default_factory=dict)
    control_frame_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def ring_sum(self) -> np.ndarray | None:
        """The gateway's unmasked ring sum, or None if the cohort aborted."""
        return None if self.result is None else self.result.ring_sum

    @property
    def survivors(self) -> tuple[str, ...]:
        """Devices whose updates are in the sum."""
        return () if self.result is None else self.result.survivors


class CohortRun:
    """Drives one gateway's round (see the module docstring)."""

    def __init__(self, gateway: str, task: RoundTask, selected: list[str], *, seed: int) -> None:
        self.gateway, self.task, self.seed = gateway, task, seed
        self.keys = {name: identity_key(name, seed) for name in selected}
        self.public: dict[str, Ed25519PublicKey] = {n: k.public_key() for n, k in self.keys.items()}
        graph_seed = hashlib.sha256(f"fedlora/sim/{seed}/graph/{gateway}/{task.round_id}".encode()).digest()
        self.driver = RoundDriver(
            gateway_id=gateway,
            fleet=FLEET,
            task=task,
            graph_seed=graph_seed,
            expected_devices=frozenset(selected),
            verify_key=self.public.get,
            min_cohort=task.min_cohort,
        )
        self.clients = {
            name: SecAggClient(
                name,
                gateway_id=gateway,
                fleet=FLEET,
                round_id=task.round_id,
                identity_key=self.keys[name],
                verify_key=self.public.get,
                model_hash=task.model_sha256,
                rng_bytes=deterministic_rng(f"fedlora/sim/{seed}/{name}/{task.round_id}".encode()),
            )
            for name in selected
        }
        self.outcome = CohortOutcome(gateway, tuple(sorted(selected)))

    def _send(self, stage: Stage, message: StageMessage, *, update: bool = False) -> bool:
        """Frame, sign and measure a device message; the gateway decodes and verifies it, then accepts."""
        sender = message.sender
        frame = encode_message(
            message,
            fleet=FLEET,
            round_id=self.task.round_id,
            sender=sender,
            created_ms=CREATED_MS,
            signing_key=self.keys[sender],
        )
        sizes = self.outcome.update_frame_bytes if update else self.outcome.control_frame_bytes
        sizes[sender] = sizes.get(sender, 0) + len(frame)
        _header, decoded = decode_message(frame, type(message), verify_key=self.public.get)
        return self.driver.accept(stage, decoded)

    def run(
        self,
        ring_values: Callable[[str], np.ndarray],
        *,
        vanished: frozenset[str],
        late: Callable[[str, int], bool],
    ) -> CohortOutcome:
        """Run every stage. `ring_values(device)` gives the encoded update to mask; `late(device,
        frame_bytes)` says whether the masked frame of that size arrives after the deadline."""
        for client in self.clients.values():
            self._send(Stage.ADVERTISE, client.advertise())
        while not self.driver.finished:
            self._deliver(self.driver.close(), ring_values, vanished, late)
        self.outcome.result = self.driver.result
        if self.driver.aborted is not None:
            self.outcome.aborted = self.driver.aborted.reason
        return self.outcome

    def _deliver(
        self,
        outgoing: list[Outgoing],
        ring_values: Callable[[str], np.ndarray],
        vanished: frozenset[str],
        late: Callable[[str, int], bool],
    ) -> None:
        for item in outgoing:
            message = item.message
            if isinstance(message, RoutedShares):
                self._on_routed(message, ring_values, vanished, late)
            elif isinstance(message, Roster):
                for member in message.members:
                    shares = self.clients[member.sender].on_roster(message)
                    self._send(Stage.SHARES, _answered(shares, ShareKeys))
            elif isinstance(message, Survivors):
                for node in message.survivors:
                    signature = self.clients[node].on_survivors(message)
                    self._send(Stage.CONSISTENCY, _answered(signature, ConsistencySignature))
            elif isinstance(message, UnmaskRequest):
                for node in message.signatures:
                    unmask = self.clients[node].on_unmask_request(message)
                    self._send(Stage.UNMASK, _answered(unmask, UnmaskShares))

    def _on_routed(
        self,
        routed: RoutedShares,
        ring_values: Callable[[str], np.ndarray],
        vanished: frozenset[str],
        late: Callable[[str, int], bool],
    ) -> None:
        node = routed.recipient
        client = self.clients[node]
        client.on_routed_shares(routed)
        if node in vanished:
            return
        values = ring_values(node)
        masked: MaskedUpdate = client.mask(values)
        frame = encode_message(
            masked,
            fleet=FLEET,
            round_id=self.task.round_id,
            sender=node,
            created_ms=CREATED_MS,
            signing_key=self.keys[node],
            codec_chain=codec_chain_text(self.task.codec),  # as the device agent frames it
        )
        self.outcome.update_frame_bytes[node] = len(frame)
        if late(node, len(frame)):
            return
        _header, decoded = decode_message(frame, MaskedUpdate, verify_key=self.public.get)
        if self.driver.accept(Stage.MASKED, decoded):
            self.outcome.masked_inputs[node] = values


def _answered(message: object, kind: type[AnswerT]) -> AnswerT:
    """`message` as a `kind`; ProtocolError when the simulated device answered something else or nothing."""
    if not isinstance(message, kind):
        raise ProtocolError(f"a simulated device did not answer with {kind.__name__}")
    return message


def survivor_sum(
    masked_inputs: Mapping[str, np.ndarray], survivors: tuple[str, ...], ring_bits: int
) -> np.ndarray:
    """Σ of the survivors' encoded updates mod 2^b (uint32): what the gateway's unmasked sum must equal."""
    total = np.zeros_like(next(iter(masked_inputs.values())), dtype=np.uint64)
    for node in survivors:
        total += masked_inputs[node].astype(np.uint64)
    return (total & np.uint64((1 << ring_bits) - 1)).astype(np.uint32)
