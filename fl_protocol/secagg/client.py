"""SecAgg+ client role: a pure state machine driven by the gateway's messages (no I/O, threads, clocks).

Handling policy (see docs/secure-aggregation.md):
- a message for another round or from another sender than the gateway, or one that arrives before its
  stage: ignored, logged, returns None (the bus may deliver late, early or duplicate messages);
- a replay of the message already answered in a stage: the cached answer is returned again (it releases
  nothing new), so handlers are idempotent on (round, sender, message type);
- anything that would make an honest client unsafe (a conflicting second message in a stage, bad
  signatures, overlapping or inconsistent sets, a share that fails to decrypt, fewer than t survivors):
  refused with ProtocolError, and the client moves to ABORTED and answers nothing more this round.
- the survivor floor: with `min_survivors` (the task's dp.min_survivors) the client refuses a roster
  smaller than the floor, and refuses to sign or to unmask a survivor set smaller than it, so not even
  a dishonest gateway can unmask a sum that carries less than the noise the accountant assumed.

The stages and their order are one transition table, `client_stages.CLIENT_TABLE` (shown in
docs/architecture.md); this class checks each message, then applies its event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fl_protocol.errors import DecodeError, ProtocolError
from fl_protocol.secagg import keys, shamir
from fl_protocol.secagg.client_stages import CLIENT_TABLE, ClientEvent, ClientStage
from fl_protocol.secagg.cohort_view import Cohort
from fl_protocol.secagg.messages import (
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
from fl_protocol.secagg.prg import MaskExpander, ring_mask
from fl_protocol.state_machine import StateMachine

logger = logging.getLogger(__name__)

VerifyKeyLookup = Callable[[str], "Ed25519PublicKey | None"]
AnyMessage = Roster | RoutedShares | Survivors | UnmaskRequest
_T = TypeVar("_T")
_IGNORED = object()  # marker returned by _gate for messages to drop

#: The slot name of each message event, as logs and refusals spell it.
_SLOTS = {
    ClientEvent.ROSTER: "roster",
    ClientEvent.ROUTED_SHARES: "routed",
    ClientEvent.SURVIVORS: "survivors",
    ClientEvent.UNMASK_REQUEST: "unmask",
}


class SecAggClient:
    """One device's side of one SecAgg+ round with one gateway."""

    def __init__(
        self,
        node_id: str,
        *,
        gateway_id: str,
        fleet: str,
        round_id: int,
        identity_key: Ed25519PrivateKey,
        verify_key: VerifyKeyLookup,
        model_hash: bytes,
        rng_bytes: Callable[[int], bytes] = os.urandom,
        min_survivors: int = 1,
    ) -> None:
        if min_survivors < 1:
            raise ValueError("min_survivors must be >= 1")
        self.node_id, self.gateway_id, self.fleet, self.round_id = node_id, gateway_id, fleet, round_id
        self.min_survivors = min_survivors
        self._machine = StateMachine(CLIENT_TABLE)  # stages: fl_protocol.secagg.client_stages
        self._identity_key, self._verify_key, self._rng = identity_key, verify_key, rng_bytes
        self._model_hash = model_hash
        self._c = keys.generate_key_pair(rng_bytes)
        self._s = keys.generate_key_pair(rng_bytes)
        self._cohort: Cohort | None = None
        self._peers: frozenset[str] = frozenset()  # neighbours whose shares arrived (mask partners)
        self._held: dict[str, tuple[int, int]] = {}  # owner -> (b-share, s-share) this node holds
        self._b_seed: bytes | None = None
        self._received: dict[ClientEvent, object] = {}  # message event -> the message answered
        self._answers: dict[ClientEvent, object] = {}

    @property
    def stage(self) -> ClientStage:
        """The current stage (CLIENT_TABLE's state; ABORTED after a refusal)."""
        return self._machine.state

    # -- stage 2: advertise -------------------------------------------------------------------
    def advertise(self) -> AdvertiseKeys:
        """Signed c_pk and s_pk for the gateway (idempotent)."""
        if self.stage is ClientStage.ABORTED:
            raise ProtocolError("client aborted this round")
        statement = keys.advertise_statement(
            self.fleet, self.round_id, self.node_id, self._c.public_bytes, self._s.public_bytes
        )
        message = AdvertiseKeys(
            round_id=self.round_id,
            sender=self.node_id,
            c_public=self._c.public_bytes,
            s_public=self._s.public_bytes,
            signature=keys.sign(self._identity_key, statement),
        )
        if self._machine.can(ClientEvent.ADVERTISE):  # repeated calls return the same keys, stage kept
            self._machine.apply(ClientEvent.ADVERTISE)
        return message

    # -- stage 3/4: roster -> encrypted shares ------------------------------------------------
    def on_roster(self, roster: Roster) -> ShareKeys | None:
        """Check the roster (own keys, neighbours' key signatures, t) and share b_u and s_sk."""
        replay = self._gate(roster, ClientEvent.ROSTER)
        if replay is not None:
            return replay if isinstance(replay, ShareKeys) else None
        try:
            cohort = Cohort.from_roster(roster)
        except ProtocolError as exc:
            self._refuse(str(exc))
        own = cohort.keys.get(self.node_id)
        if len(cohort.members) < self.min_survivors:
            self._refuse(f"roster of {len(cohort.members)} below min_survivors={self.min_survivors}")
        if own is None:
            # Usually benign: our advertisement reached the gateway after it closed the stage.
            self._refuse("not in the roster (advertised after the gateway closed the cohort)")
        if (own.c_public, own.s_public) != (self._c.public_bytes, self._s.public_bytes):
            self._refuse("roster carries other keys for this node than it advertised")
        for peer in cohort.neighbours[self.node_id]:
            self._check_advertisement(cohort.keys[peer])
        self._cohort = cohort
        self._b_seed = self._rng(shamir.SECRET_BYTES)
        holders = cohort.holders(self.node_id)
        xs = [cohort.index[h] for h in holders]
        b_shares = shamir.split(self._b_seed, threshold=cohort.threshold, xs=xs, rng_bytes=self._rng)
        s_shares = shamir.split(self._s.private_bytes, threshold=cohort.threshold, xs=xs, rng_bytes=self._rng)
        ciphertexts: dict[str, bytes] = {}
        for holder in sorted(holders):
            x = cohort.index[holder]
            if holder == self.node_id:
                self._held[holder] = (b_shares[x], s_shares[x])
                continue
            plaintext = shamir.share_to_bytes(b_shares[x]) + shamir.share_to_bytes(s_shares[x])
            key = self._share_key(cohort.keys[holder].c_public, self.node_id, holder)
            ad = keys.share_associated_data(self.fleet, self.round_id, self.node_id, holder)
            ciphertexts[holder] = keys.encrypt_share(key, plaintext, ad, self._rng)
        commitment = keys.self_mask_commitment(
            self._b_seed, fleet=self.fleet, round_id=self.round_id, node=self.node_id
        )
        answer = ShareKeys(
            round_id=self.round_id, sender=self.node_id, ciphertexts=ciphertexts, b_commitment=commitment
        )
        return self._advance(roster, ClientEvent.ROSTER, answer)

    def on_routed_shares(self, routed: RoutedShares) -> None:
        """Decrypt the shares neighbours sent; any failure refuses the round."""
        replay = self._gate(routed, ClientEvent.ROUTED_SHARES)
        if replay is not None or self.stage is not ClientStage.SHARES_SENT:
            return None
        cohort = self._require_cohort()
        if routed.recipient != self.node_id:
            self._refuse("routed shares addressed to another node")
        sources = set(routed.ciphertexts)
        if not sources <= cohort.neighbours[self.node_id]:
            self._refuse("shares from a node that is not a neighbour")
        if len(sources) + 1 < cohort.threshold:
            self._refuse("fewer than t share holders remain")
        for src, blob in routed.ciphertexts.items():
            key = self._share_key(cohort.keys[src].c_public, src, self.node_id)
            ad = keys.share_associated_data(self.fleet, self.round_id, src, self.node_id)
            try:
                plaintext = keys.decrypt_share(key, blob, ad)
                half = shamir.SHARE_BYTES
                if len(plaintext) != 2 * half:
                    raise DecodeError()
                b_share = shamir.share_from_bytes(plaintext[:half])
                s_share = shamir.share_from_bytes(plaintext[half:])
            except (DecodeError, ValueError):
                self._refuse(f"share from {src} failed to decrypt")
            self._held[src] = (b_share, s_share)
        self._peers = frozenset(sources)
        self._advance(routed, ClientEvent.ROUTED_SHARES, True)
        return None

    # -- stage 5: mask ------------------------------------------------------------------------
    def mask(self, values: np.ndarray) -> MaskedUpdate:
        """Mask a uint32 update in Z_{2^b}: + PRG(b_u), ± PRG(s_uv) for each mask partner (+ if u < v).

        Masking is allowed once per round: two masked vectors under one mask would reveal their
        difference.
        """
        if not self._machine.can(ClientEvent.MASK):  # a wrong call, not a refusal: the stage is kept
            raise ProtocolError(f"mask() not allowed in stage {self.stage.name}")
        cohort = self._require_cohort()
        if values.dtype != np.uint32 or values.shape != (cohort.dimension,):
            raise ProtocolError(f"update must be a uint32 vector of length {cohort.dimension}")
        mask = ring_mask(cohort.ring_bits)
        if values.size and int(values.max()) > int(mask):
            raise ProtocolError("update values exceed the ring")
        assert self._b_seed is not None
        out = values.copy()
        expander = MaskExpander(cohort.dimension)
        expander.add_into(out, self._b_seed)
        for peer in sorted(self._peers):
            seed = keys.derive_pair_seed(
                self._s.private_bytes,
                cohort.keys[peer].s_public,
                fleet=self.fleet,
                round_id=self.round_id,
                node_a=self.node_id,
                node_b=peer,
            )
            expander.add_into(out, seed, subtract=self.node_id > peer)
        np.bitwise_and(out, mask, out=out)
        self._b_seed = None  # the server recovers it from shares; this node no longer needs it
        self._machine.apply(ClientEvent.MASK)
        return MaskedUpdate(
            round_id=self.round_id, sender=self.node_id, ring_bits=cohort.ring_bits, values=out
        )

    # -- stage 6: consistency -----------------------------------------------------------------
    def on_survivors(self, survivors: Survivors) -> ConsistencySignature | None:
        """Sign (fleet, round, survivors, model hash) once; a different set later is refused."""
        replay = self._gate(survivors, ClientEvent.SURVIVORS)
        if replay is not None:
            return replay if isinstance(replay, ConsistencySignature) else None
        cohort = self._require_cohort()
        surviving = set(survivors.survivors)
        if self.node_id not in surviving:
            self._refuse("survivor set omits this node, which uploaded")
        if not surviving <= set(cohort.members):
            self._refuse("survivor set names nodes outside the roster")
        if len(surviving) < cohort.threshold:
            self._refuse("fewer than t survivors")
        self._check_floor(len(surviving))
        if not (surviving & cohort.neighbours[self.node_id]) <= self._peers:
            self._refuse("survivor set names a neighbour that never sent shares")
        statement = keys.consistency_statement(
            self.fleet, self.round_id, survivors.survivors, self._model_hash
        )
        answer = ConsistencySignature(
            round_id=self.round_id, sender=self.node_id, signature=keys.sign(self._identity_key, statement)
        )
        return self._advance(survivors, ClientEvent.SURVIVORS, answer)

    # -- stage 7: unmask ----------------------------------------------------------------------
    def on_unmask_request(self, request: UnmaskRequest) -> UnmaskShares | None:
        """Release b-shares of survivors and s-shares of dropped peers, after all the checks."""
        replay = self._gate(request, ClientEvent.UNMASK_REQUEST)
        if replay is not None:
            return replay if isinstance(replay, UnmaskShares) else None
        cohort = self._require_cohort()
        signed = self._received[ClientEvent.SURVIVORS]
        assert isinstance(signed, Survivors)
        surviving, dropped = set(request.survivors), set(request.dropped)
        if surviving & dropped:
            self._refuse("survivor and dropped sets overlap")
        if request.survivors != signed.survivors:
            self._refuse("survivor set differs from the one this node signed")
        self._check_floor(len(surviving))
        if self.node_id in dropped or not dropped <= set(cohort.members):
            self._refuse("dropped set names this node or nodes outside the roster")
        if not set(self._held) <= surviving | dropped:
            self._refuse("a share-holding peer is neither survivor nor dropped")
        self._check_consistency_signatures(request, cohort)
        b_shares = {o: s[0] for o, s in self._held.items() if o in surviving}
        s_shares = {o: s[1] for o, s in self._held.items() if o in dropped}
        answer = UnmaskShares(
            round_id=self.round_id, sender=self.node_id, b_shares=b_shares, s_shares=s_shares
        )
        return self._advance(request, ClientEvent.UNMASK_REQUEST, answer)

    # -- helpers ------------------------------------------------------------------------------
    def _gate(self, message: AnyMessage, event: ClientEvent) -> object | None:
        """Common checks. Returns the cached answer for a replay, a non-None marker for 'ignore',
        None when the message should be processed now (CLIENT_TABLE allows `event` in this stage)."""
        slot = _SLOTS[event]
        if self.stage is ClientStage.ABORTED:
            raise ProtocolError("client aborted this round")
        if message.round_id != self.round_id or message.sender != self.gateway_id:
            logger.info("ignored %s: round %s from %s", slot, message.round_id, message.sender)
            return _IGNORED
        if event in self._received:
            if self._received[event] == message:
                logger.debug("replayed %s: returning the cached answer", slot)
                return self._answers[event]
            self._refuse(f"conflicting second {slot} message")
        if not self._machine.can(event):
            logger.info("ignored %s in stage %s", slot, self.stage.name)
            return _IGNORED
        return None

    def _advance(self, message: AnyMessage, event: ClientEvent, answer: _T) -> _T:
        self._received[event], self._answers[event] = message, answer
        self._machine.apply(event)
        return answer

    def _check_advertisement(self, entry: AdvertiseKeys) -> None:
        statement = keys.advertise_statement(
            self.fleet, self.round_id, entry.sender, entry.c_public, entry.s_public
        )
        valid = entry.round_id == self.round_id and keys.verify(
            self._verify_key(entry.sender), entry.signature, statement
        )
        if not (valid and keys.check_public_key(entry.c_public) and keys.check_public_key(entry.s_public)):
            self._refuse(f"roster entry for {entry.sender} is not validly signed")

    def _check_consistency_signatures(self, request: UnmaskRequest, cohort: Cohort) -> None:
        if not set(request.signatures) <= set(request.survivors):
            self._refuse("consistency signature from a non-survivor")
        statement = keys.consistency_statement(self.fleet, self.round_id, request.survivors, self._model_hash)
        for signer, signature in request.signatures.items():
            if not keys.verify(self._verify_key(signer), signature, statement):
                self._refuse(f"invalid consistency signature from {signer}")
        if len(request.signatures) < cohort.threshold:
            self._refuse("fewer than t consistency signatures")

    def _check_floor(self, survivors: int) -> None:
        if survivors < self.min_survivors:
            self._refuse(f"{survivors} survivors below the floor min_survivors={self.min_survivors}")

    def _share_key(self, peer_c_public: bytes, src: str, dst: str) -> bytes:
        return keys.derive_share_key(
            self._c.private_bytes, peer_c_public, fleet=self.fleet, round_id=self.round_id, src=src, dst=dst
        )

    def _require_cohort(self) -> Cohort:
        if self._cohort is None:
            raise ProtocolError("no roster yet")
        return self._cohort

    def _refuse(self, reason: str) -> NoReturn:
        logger.warning("round %s: refusing: %s", self.round_id, reason)
        self._machine.fail()  # ABORTED: CLIENT_TABLE's error state, nothing leaves it
        self._held.clear()
        self._b_seed = None
        raise ProtocolError(reason)
