"""SecAgg+ server role (the gateway): a pure state machine. Devices' messages go to the `on_*` handlers;
the caller advances stages on its own deadlines with the `close_*` / `unmask_request` / `finalize` calls.
Which message and which call each stage allows is one table, `SERVER_TABLE` (server_stages.py).

Handling policy (see docs/secure-aggregation.md): device input never raises. A message for another
round, from a node not entitled to send it in this stage, out of stage, a duplicate (first one wins),
or with invalid content is ignored with a logged reason and the handler returns False. Calling an advance
method in the wrong stage is a bug of the caller: it raises ProtocolError (`TransitionError`) and the
server stays in its error stage. Below t at any point the cohort is aborted: the advance call returns an
`Abort` message and nothing is released. So is it below the survivor floor `min_survivors` (the task's
dp.min_survivors): a sum of fewer survivors would carry less DP noise than the accountant assumed.
Reconstruction is verifiable: a b_u must match the commitment its owner sent with its shares, an s_sk
its advertised public key; wrong shares are found, their senders named in `AggregateResult.misbehaving`
and left out (docs/secure-aggregation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import keys, shamir
from fl_protocol.secagg.cohort_view import Cohort, check_threshold, default_threshold
from fl_protocol.secagg.graph import default_degree
from fl_protocol.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ConsistencySignature,
    MaskedUpdate,
    Roster,
    RoutedShares,
    ShareKeys,
    Survivors,
    UnmaskRequest,
    UnmaskShares,
)
from fl_protocol.secagg.prg import check_ring_bits, ring_mask
from fl_protocol.secagg.server_stages import SERVER_TABLE, ServerEvent, ServerStage
from fl_protocol.secagg.unmask import remove_masks
from fl_protocol.state_machine import StateMachine

logger = logging.getLogger(__name__)

_CIPHERTEXT_BYTES = keys.NONCE_BYTES + 2 * shamir.SHARE_BYTES + 16
# Stages in which the shares of U2 are fixed and can be routed (ServerStage is re-exported from here).
_ROUTED_STAGES = frozenset({ServerStage.MASKED_COLLECTION, ServerStage.CONSISTENCY, ServerStage.UNMASK})


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """The unmasked cohort sum (uint32 in [0, 2^ring_bits)) and who contributed to it."""

    values: np.ndarray
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    ring_bits: int
    misbehaving: tuple[str, ...] = ()  # senders of shares proven wrong (left out of the reconstruction)


class SecAggServer:
    """The gateway's side of one SecAgg+ round for one cohort."""

    def __init__(
        self,
        gateway_id: str,
        *,
        fleet: str,
        round_id: int,
        dimension: int,
        ring_bits: int,
        graph_seed: bytes,
        verify_key: Callable[[str], Ed25519PublicKey | None],
        model_hash: bytes,
        min_cohort: int = 3,
        degree: int | None = None,
        threshold: int | None = None,
        threshold_fraction: float = 0.5,
        min_survivors: int = 1,
    ) -> None:
        check_ring_bits(ring_bits)
        if min_cohort < 2 or dimension < 0 or len(graph_seed) != 32 or min_survivors < 1:
            raise ValueError(
                "need min_cohort >= 2, min_survivors >= 1, dimension >= 0 and a 32-byte graph seed"
            )
        self.min_survivors = min_survivors
        default_threshold(1, threshold_fraction)  # validates the fraction early
        self.gateway_id, self.fleet, self.round_id = gateway_id, fleet, round_id
        self.dimension, self.ring_bits, self.min_cohort = dimension, ring_bits, min_cohort
        self._graph_seed, self._verify_key, self._model_hash = graph_seed, verify_key, model_hash
        self._degree, self._threshold, self._fraction = degree, threshold, threshold_fraction
        self._machine = StateMachine(SERVER_TABLE)
        self._advertised: dict[str, AdvertiseKeys] = {}
        self._cohort: Cohort | None = None
        self._roster: Roster | None = None
        self._share_keys: dict[str, ShareKeys] = {}
        self._sharers: frozenset[str] = frozenset()
        self._sum = np.zeros(0, dtype=np.uint32)
        self._uploaded: set[str] = set()
        self._survivors: tuple[str, ...] = ()
        self._dropped: tuple[str, ...] = ()
        self._signatures: dict[str, bytes] = {}
        self._request: UnmaskRequest | None = None
        self._b_points: dict[str, dict[int, int]] = {}
        self._s_points: dict[str, dict[int, int]] = {}
        self._responders: set[str] = set()

    @property
    def stage(self) -> ServerStage:
        """The current stage (SERVER_TABLE's state)."""
        return self._machine.state

    @property
    def cohort(self) -> Cohort | None:
        """The cohort fixed by `close_advertise` (None before)."""
        return self._cohort

    # -- stage 2/3 ----------------------------------------------------------------------------
    def on_advertise(self, message: AdvertiseKeys) -> bool:
        """Accept a device's signed X25519 public keys."""
        if not self._admit(message, ServerEvent.ADVERTISE_KEYS, "advertise"):
            return False
        if message.sender in self._advertised:
            return self._ignore(message, "duplicate advertise")
        statement = keys.advertise_statement(
            self.fleet, self.round_id, message.sender, message.c_public, message.s_public
        )
        if not keys.verify(self._verify_key(message.sender), message.signature, statement):
            return self._ignore(message, "advertise signature invalid")
        if not (keys.check_public_key(message.c_public) and keys.check_public_key(message.s_public)):
            return self._ignore(message, "invalid X25519 public key")
        self._advertised[message.sender] = message
        return True

    def close_advertise(self) -> Roster | Abort:
        """Fix the cohort (sorted ids; index = position + 1), the graph degree k and threshold t."""
        self._require(ServerEvent.CLOSE_ADVERTISE)
        n = len(self._advertised)
        if n < self.min_cohort:
            return self._abort(f"cohort of {n} below the minimum of {self.min_cohort}")
        if n < self.min_survivors:
            return self._abort(f"cohort of {n} below the survivor floor min_survivors={self.min_survivors}")
        degree = _valid_degree(n, self._degree if self._degree is not None else default_degree(n))
        threshold = (
            self._threshold if self._threshold is not None else default_threshold(degree, self._fraction)
        )
        try:
            check_threshold(degree, threshold)
        except ProtocolError as exc:
            return self._abort(str(exc))
        roster = Roster(
            round_id=self.round_id,
            sender=self.gateway_id,
            members=tuple(self._advertised[node] for node in sorted(self._advertised)),
            graph_seed=self._graph_seed,
            degree=degree,
            threshold=threshold,
            dimension=self.dimension,
            ring_bits=self.ring_bits,
        )
        self._roster, self._cohort = roster, Cohort.from_roster(roster)
        self._machine.apply(ServerEvent.CLOSE_ADVERTISE)
        return roster

    # -- stage 4 ------------------------------------------------------------------------------
    def on_share_keys(self, message: ShareKeys) -> bool:
        """Accept a device's encrypted shares; they must address exactly its neighbours."""
        cohort = self._cohort
        if cohort is None or not self._admit(message, ServerEvent.SHARE_KEYS, "share keys"):
            return False
        if message.sender not in cohort.index:
            return self._ignore(message, "sender not in the roster")
        if message.sender in self._share_keys:
            return self._ignore(message, "duplicate share keys")
        if set(message.ciphertexts) != cohort.neighbours[message.sender]:
            return self._ignore(message, "shares do not address exactly the neighbours")
        if any(len(c) != _CIPHERTEXT_BYTES for c in message.ciphertexts.values()):
            return self._ignore(message, "share ciphertext of the wrong size")
        if len(message.b_commitment) != keys.SEED_BYTES:
            return self._ignore(message, "self-mask commitment of the wrong size")
        self._share_keys[message.sender] = message
        return True

    def close_share_keys(self) -> dict[str, RoutedShares] | Abort:
        """Fix U2 (nodes that shared) and return each member of U2 its routed shares."""
        self._require(ServerEvent.CLOSE_SHARE_KEYS)
        self._sharers = frozenset(self._share_keys)
        if len(self._sharers) < self._require_cohort().threshold:
            return self._abort("fewer than t nodes shared their keys")
        self._sum = np.zeros(self.dimension, dtype=np.uint32)
        self._machine.apply(ServerEvent.CLOSE_SHARE_KEYS)
        return {node: self.routed_shares_for(node) for node in sorted(self._sharers)}

    def routed_shares_for(self, node: str) -> RoutedShares:
        """The shares from members of U2 addressed to `node` (the gateway only routes them)."""
        if self.stage not in _ROUTED_STAGES:
            raise ProtocolError("routed shares exist only after close_share_keys")
        ciphertexts = {
            src: self._share_keys[src].ciphertexts[node]
            for src in sorted(self._sharers)
            if node in self._share_keys[src].ciphertexts
        }
        return RoutedShares(
            round_id=self.round_id, sender=self.gateway_id, recipient=node, ciphertexts=ciphertexts
        )

    # -- stage 5 ------------------------------------------------------------------------------
    def on_masked_update(self, message: MaskedUpdate) -> bool:
        """Add a masked update of a member of U2 into the running sum (in place, uint32 wrapping)."""
        if not self._admit(message, ServerEvent.MASKED_UPDATE, "masked update"):
            return False
        if message.sender not in self._sharers:
            return self._ignore(message, "sender did not share keys")
        if message.sender in self._uploaded:
            return self._ignore(message, "duplicate masked update")
        values = message.values
        if (
            message.ring_bits != self.ring_bits
            or values.dtype != np.uint32
            or values.shape != (self.dimension,)
        ):
            return self._ignore(message, "masked update of the wrong ring, type or shape")
        if values.size and int(values.max()) > int(ring_mask(self.ring_bits)):
            return self._ignore(message, "masked update values exceed the ring")
        np.add(self._sum, values, out=self._sum)
        self._uploaded.add(message.sender)
        return True

    def close_masked_collection(self) -> Survivors | Abort:
        """Fix the survivor set U3 (nodes whose update arrived); fewer than t aborts the cohort."""
        self._require(ServerEvent.CLOSE_MASKED_COLLECTION)
        self._survivors = tuple(sorted(self._uploaded))
        self._dropped = tuple(sorted(self._sharers - self._uploaded))
        if len(self._survivors) < self._require_cohort().threshold:
            return self._abort("fewer than t survivors")
        if len(self._survivors) < self.min_survivors:
            return self._abort(
                f"{len(self._survivors)} survivors below the floor min_survivors={self.min_survivors}"
            )
        self._machine.apply(ServerEvent.CLOSE_MASKED_COLLECTION)
        return Survivors(round_id=self.round_id, sender=self.gateway_id, survivors=self._survivors)

    # -- stage 6 ------------------------------------------------------------------------------
    def on_consistency_signature(self, message: ConsistencySignature) -> bool:
        """Accept a survivor's signature over (fleet, round, survivors, model hash) if it verifies."""
        if not self._admit(message, ServerEvent.CONSISTENCY_SIGNATURE, "consistency signature"):
            return False
        if message.sender not in self._survivors:
            return self._ignore(message, "signer is not a survivor")
        if message.sender in self._signatures:
            return self._ignore(message, "duplicate consistency signature")
        statement = keys.consistency_statement(self.fleet, self.round_id, self._survivors, self._model_hash)
        if not keys.verify(self._verify_key(message.sender), message.signature, statement):
            return self._ignore(message, "consistency signature invalid")
        self._signatures[message.sender] = message.signature
        return True

    def unmask_request(self) -> UnmaskRequest | Abort:
        """With at least t valid signatures, the request for shares (idempotent once issued)."""
        self._require(ServerEvent.UNMASK_REQUEST)
        if self._request is not None:  # in UNMASK: issued already, the same request again
            return self._request
        if len(self._signatures) < self._require_cohort().threshold:
            return self._abort("fewer than t consistency signatures")
        self._request = UnmaskRequest(
            round_id=self.round_id,
            sender=self.gateway_id,
            survivors=self._survivors,
            dropped=self._dropped,
            signatures=dict(sorted(self._signatures.items())),
        )
        self._machine.apply(ServerEvent.UNMASK_REQUEST)
        return self._request

    # -- stage 7 ------------------------------------------------------------------------------
    def on_unmask_shares(self, message: UnmaskShares) -> bool:
        """Record a signer's b-shares (of survivors) and s-shares (of dropped nodes) it really holds."""
        cohort = self._cohort
        if cohort is None or not self._admit(message, ServerEvent.UNMASK_SHARES, "unmask shares"):
            return False
        if message.sender not in self._signatures:
            return self._ignore(message, "responder did not sign the survivor set")
        if message.sender in self._responders:
            return self._ignore(message, "duplicate unmask shares")
        survivors, dropped = set(self._survivors), set(self._dropped)
        if not (set(message.b_shares) <= survivors and set(message.s_shares) <= dropped):
            return self._ignore(message, "share of the wrong kind for a node")
        owners = set(message.b_shares) | set(message.s_shares)
        if any(message.sender not in cohort.holders(o) for o in owners):
            return self._ignore(message, "share for a node the sender holds no share of")
        if any(not 0 <= v < shamir.PRIME for v in (*message.b_shares.values(), *message.s_shares.values())):
            return self._ignore(message, "share outside the field")
        x = cohort.index[message.sender]
        for owner, value in message.b_shares.items():
            self._b_points.setdefault(owner, {})[x] = value
        for owner, value in message.s_shares.items():
            self._s_points.setdefault(owner, {})[x] = value
        self._responders.add(message.sender)
        return True

    def finalize(self) -> AggregateResult | Abort:
        """Reconstruct b of survivors and s_sk of dropped nodes, remove the masks, return the sum."""
        self._require(ServerEvent.FINALIZE)
        cohort = self._require_cohort()
        try:
            values, misbehaving = remove_masks(
                self._sum,
                cohort=cohort,
                fleet=self.fleet,
                round_id=self.round_id,
                survivors=self._survivors,
                dropped=self._dropped,
                b_points=self._b_points,
                s_points=self._s_points,
                b_commitments={u: self._share_keys[u].b_commitment for u in self._survivors},
            )
        except ProtocolError as exc:
            return self._abort(str(exc))
        self._machine.apply(ServerEvent.FINALIZE)
        self._b_points, self._s_points, self._sum = {}, {}, np.zeros(0, dtype=np.uint32)
        return AggregateResult(values, self._survivors, self._dropped, self.ring_bits, misbehaving)

    # -- helpers ------------------------------------------------------------------------------
    def _admit(self, message: object, event: ServerEvent, what: str) -> bool:
        """True if a device message may be handled now: this round, its stage (the table), a sender."""
        round_id, sender = getattr(message, "round_id", None), getattr(message, "sender", None)
        if round_id != self.round_id:
            return self._ignore(message, f"{what} for round {round_id}")
        if not self._machine.can(event):
            return self._ignore(message, f"{what} in stage {self.stage.name}")
        if not isinstance(sender, str):
            return self._ignore(message, f"{what} without sender")
        return True

    def _ignore(self, message: object, reason: str) -> bool:
        logger.info(
            "round %s: ignored %s from %s: %s",
            self.round_id,
            type(message).__name__,
            getattr(message, "sender", "?"),
            reason,
        )
        return False

    def _require(self, event: ServerEvent) -> None:
        """An advance call the table refuses now is the caller's bug: raise `TransitionError` (a
        ProtocolError) and enter the error stage; otherwise nothing happens (the call applies its outcome)."""
        if not self._machine.can(event):
            self._machine.apply(event)  # raises

    def _require_cohort(self) -> Cohort:
        if self._cohort is None:
            raise ProtocolError("no cohort yet")
        return self._cohort

    def _abort(self, reason: str) -> Abort:
        logger.warning("round %s: aborting cohort: %s", self.round_id, reason)
        self._machine.apply(ServerEvent.ABORT)
        self._sum = np.zeros(0, dtype=np.uint32)
        self._b_points, self._s_points = {}, {}
        return Abort(round_id=self.round_id, sender=self.gateway_id, reason=reason)


def _valid_degree(n: int, requested: int) -> int:
    """Clamp k to [1, n-1] and fix parity (n·k must be even) by stepping down, or up if k = 1."""
    degree = max(1, min(requested, n - 1))
    if (n * degree) % 2:
        degree = degree - 1 if degree > 1 else degree + 1
    return degree
