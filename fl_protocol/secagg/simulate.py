"""Run a whole SecAgg+ cohort in memory: every client and the gateway, with chosen dropouts.

Used by the tests, the benchmark and the demo. Randomness comes from `deterministic_rng` (AES-256-CTR
keyed by a seed) so runs are reproducible; production code passes os.urandom instead. An optional
injected clock accumulates the time spent in client and in server code per stage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg.client import SecAggClient
from fl_protocol.secagg.messages import Abort, UnmaskRequest, UnmaskShares
from fl_protocol.secagg.server import AggregateResult, SecAggServer

_R = TypeVar("_R")
# (responder, its honest answer, the request) -> the answer it sends: lets tests play lying share holders
UnmaskTamper = Callable[[str, UnmaskShares, UnmaskRequest], UnmaskShares]


def deterministic_rng(seed: bytes) -> Callable[[int], bytes]:
    """A reproducible byte source (AES-256-CTR keystream under HKDF(seed)); for tests and simulation."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedlora/secagg/sim-rng").derive(seed)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return lambda n: encryptor.update(bytes(n))


def _answered(message: _R | None) -> _R:
    """In an honest simulated run every client answers; a None means a handler ignored a message."""
    if message is None:
        raise ProtocolError("a simulated client ignored a message it should have answered")
    return message


@dataclass
class Simulation:
    """A cohort of `n` clients named node-000.. and one gateway, set up but not yet run."""

    n: int
    dimension: int
    ring_bits: int
    seed: bytes = b"fedlora-sim"
    degree: int | None = None
    threshold: int | None = None
    fleet: str = "sim-fleet"
    round_id: int = 1
    model_hash: bytes = bytes(32)
    min_survivors: int = 1
    clock: Callable[[], float] | None = None
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        rng = deterministic_rng(self.seed)
        self.node_ids = [f"node-{i:03d}" for i in range(self.n)]
        identities = {node: Ed25519PrivateKey.from_private_bytes(rng(32)) for node in self.node_ids}
        self.identities = identities  # exposed so tests can play colluding devices
        self.public_keys: dict[str, Ed25519PublicKey] = {n: k.public_key() for n, k in identities.items()}
        self.server = SecAggServer(
            "gw-0",
            fleet=self.fleet,
            round_id=self.round_id,
            dimension=self.dimension,
            ring_bits=self.ring_bits,
            graph_seed=rng(32),
            verify_key=self.public_keys.get,
            model_hash=self.model_hash,
            degree=self.degree,
            threshold=self.threshold,
            min_cohort=min(3, self.n),
            min_survivors=self.min_survivors,
        )
        self.clients = {
            node: SecAggClient(
                node,
                gateway_id="gw-0",
                fleet=self.fleet,
                round_id=self.round_id,
                identity_key=identities[node],
                verify_key=self.public_keys.get,
                model_hash=self.model_hash,
                rng_bytes=deterministic_rng(self.seed + node.encode()),
                min_survivors=self.min_survivors,
            )
            for node in self.node_ids
        }

    def _timed(self, label: str, action: Callable[[], _R]) -> _R:
        if self.clock is None:
            return action()
        start = self.clock()
        result = action()
        self.seconds[label] += self.clock() - start
        return result

    def run(
        self,
        inputs: Callable[[str], np.ndarray],
        *,
        drop_before_upload: Iterable[str] = (),
        drop_after_upload: Iterable[str] = (),
        tamper: UnmaskTamper | None = None,
    ) -> AggregateResult | Abort:
        """Run all stages. Nodes in `drop_before_upload` share keys but never upload; nodes in
        `drop_after_upload` upload but neither sign nor answer the unmask request; `tamper` may replace
        any responder's unmask shares before the gateway sees them."""
        before, after = set(drop_before_upload), set(drop_after_upload)
        server, clients, timed = self.server, self.clients, self._timed
        for client in clients.values():
            advert = timed("client/keys", client.advertise)
            timed("server/collect", partial(server.on_advertise, advert))
        roster = timed("server/roster", server.close_advertise)
        if isinstance(roster, Abort):
            return roster
        for client in clients.values():
            shares = timed("client/shares", partial(client.on_roster, roster))
            timed("server/collect", partial(server.on_share_keys, _answered(shares)))
        routed = timed("server/route", server.close_share_keys)
        if isinstance(routed, Abort):
            return routed
        for node, client in clients.items():
            timed("client/shares", partial(client.on_routed_shares, routed[node]))
            if node in before:
                continue
            values = inputs(node)
            masked = timed("client/mask", partial(client.mask, values))
            timed("server/collect", partial(server.on_masked_update, masked))
        return self._finish(before, after, tamper)

    def _finish(
        self, before: set[str], after: set[str], tamper: UnmaskTamper | None
    ) -> AggregateResult | Abort:
        server, timed = self.server, self._timed
        survivors = timed("server/unmask", server.close_masked_collection)
        if isinstance(survivors, Abort):
            return survivors
        responders = [n for n in survivors.survivors if n not in before | after]
        for node in responders:
            signature = timed("client/consistency", partial(self.clients[node].on_survivors, survivors))
            timed("server/collect", partial(server.on_consistency_signature, _answered(signature)))
        request = timed("server/unmask", server.unmask_request)
        if isinstance(request, Abort):
            return request
        for node in responders:
            answer = _answered(timed("client/unmask", partial(self.clients[node].on_unmask_request, request)))
            if tamper is not None:
                answer = tamper(node, answer, request)
            timed("server/collect", partial(server.on_unmask_shares, answer))
        return timed("server/unmask", server.finalize)
