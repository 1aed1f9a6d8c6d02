"""SecAgg+ state machines: honest runs, the server's ignore policy, and adversarial servers that honest
clients must refuse."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import keys
from fl_protocol.secagg.client import ClientStage
from fl_protocol.secagg.messages import (
    Abort,
    ConsistencySignature,
    Roster,
    RoutedShares,
    Survivors,
    UnmaskRequest,
)
from fl_protocol.secagg.server import AggregateResult, ServerStage
from fl_protocol.secagg.simulate import Simulation

RING_BITS = 16
DIM = 32


def _inputs(sim: Simulation) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {node: rng.integers(0, 2**RING_BITS, DIM, dtype=np.uint32) for node in sim.node_ids}


def _to_masked(n: int = 6, **kwargs: object) -> tuple[Simulation, dict[str, np.ndarray]]:
    """Run advertise, roster, shares and masked upload for every node; return before the survivors."""
    sim = Simulation(n=n, dimension=DIM, ring_bits=RING_BITS, **kwargs)  # type: ignore[arg-type]
    inputs = _inputs(sim)
    for client in sim.clients.values():
        assert sim.server.on_advertise(client.advertise())
    roster = sim.server.close_advertise()
    assert isinstance(roster, Roster)
    for client in sim.clients.values():
        share_keys = client.on_roster(roster)
        assert share_keys is not None and sim.server.on_share_keys(share_keys)
    routed = sim.server.close_share_keys()
    assert isinstance(routed, dict)
    for node, client in sim.clients.items():
        client.on_routed_shares(routed[node])
        assert sim.server.on_masked_update(client.mask(inputs[node]))
    return sim, inputs


def _signed(sim: Simulation, survivors: tuple[str, ...], signers: list[str]) -> dict[str, bytes]:
    out = {}
    for node in signers:
        answer = sim.clients[node].on_survivors(Survivors(1, "gw-0", survivors))
        assert isinstance(answer, ConsistencySignature)
        out[node] = answer.signature
    return out


def test_honest_round_gives_exact_sum() -> None:
    sim, inputs = _to_masked()
    survivors = sim.server.close_masked_collection()
    assert isinstance(survivors, Survivors)
    for client in sim.clients.values():
        assert sim.server.on_consistency_signature(client.on_survivors(survivors))  # type: ignore[arg-type]
    request = sim.server.unmask_request()
    assert isinstance(request, UnmaskRequest)
    for client in sim.clients.values():
        assert sim.server.on_unmask_shares(client.on_unmask_request(request))  # type: ignore[arg-type]
    result = sim.server.finalize()
    assert isinstance(result, AggregateResult)
    expected = sum(v.astype(np.uint64) for v in inputs.values()) % 2**RING_BITS
    np.testing.assert_array_equal(result.values, expected.astype(np.uint32))


def test_server_ignores_stale_duplicate_out_of_stage_and_forged_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim, _ = _to_masked()
    server, client = sim.server, sim.clients["node-000"]
    masked = client.mask  # already masked once: a second call is refused
    with pytest.raises(ProtocolError, match=r"mask\(\) not allowed in stage MASKED"):
        masked(np.zeros(DIM, dtype=np.uint32))
    advert = client.advertise()
    with caplog.at_level(logging.INFO):
        assert not server.on_advertise(advert)  # out of stage
    assert "in stage MASKED_COLLECTION" in caplog.text
    survivors = server.close_masked_collection()
    assert isinstance(survivors, Survivors)
    signature = client.on_survivors(survivors)
    assert isinstance(signature, ConsistencySignature)
    assert not server.on_consistency_signature(dataclasses.replace(signature, round_id=0))  # stale round
    assert server.on_consistency_signature(signature)
    assert not server.on_consistency_signature(signature)  # duplicate
    wrong_key = Ed25519PrivateKey.generate()
    statement = keys.consistency_statement(sim.fleet, 1, survivors.survivors, sim.model_hash)
    forged = ConsistencySignature(1, "node-001", wrong_key.sign(statement))
    assert not server.on_consistency_signature(forged)  # signed by the wrong key
    with pytest.raises(ProtocolError, match="event 'finalize' is not allowed in state 'consistency'"):
        server.finalize()  # advance call in the wrong stage is a caller bug


def test_server_aborts_below_threshold_and_releases_nothing() -> None:
    sim = Simulation(n=5, dimension=DIM, ring_bits=RING_BITS)
    inputs = _inputs(sim)
    result = sim.run(inputs.__getitem__, drop_before_upload=sim.node_ids[:3])  # 2 survivors, t = 3
    assert isinstance(result, Abort)
    assert sim.server.stage is ServerStage.ABORTED
    with pytest.raises(ProtocolError, match="event 'finalize' is not allowed in state 'aborted'"):
        sim.server.finalize()


def test_server_aborts_below_min_cohort() -> None:
    sim = Simulation(n=2, dimension=DIM, ring_bits=RING_BITS)
    sim.server.min_cohort = 3
    for client in sim.clients.values():
        sim.server.on_advertise(client.advertise())
    assert isinstance(sim.server.close_advertise(), Abort)


def test_client_refuses_overlapping_survivor_and_dropped_sets() -> None:
    sim, _ = _to_masked()
    everyone = tuple(sim.node_ids)
    signatures = _signed(sim, everyone, sim.node_ids)
    request = UnmaskRequest(1, "gw-0", everyone, ("node-003",), signatures)
    with pytest.raises(ProtocolError, match="overlap"):
        sim.clients["node-000"].on_unmask_request(request)
    assert sim.clients["node-000"].stage is ClientStage.ABORTED


def test_equivocating_survivor_sets_are_caught_by_consistency_round() -> None:
    sim, _ = _to_masked(n=8)  # complete graph, t = 5
    set_a = tuple(sim.node_ids[:7])  # node-007 claimed dropped to group A
    set_b = tuple(sim.node_ids)  # everyone survived, told to group B
    sigs_a = _signed(sim, set_a, sim.node_ids[:4])
    sigs_b = _signed(sim, set_b, sim.node_ids[4:])
    # group A's request cannot carry t valid signatures over set_a ...
    mixed = {**sigs_a, "node-004": sigs_b["node-004"]}
    with pytest.raises(ProtocolError, match="consistency signature"):
        sim.clients["node-000"].on_unmask_request(UnmaskRequest(1, "gw-0", set_a, ("node-007",), mixed))
    # ... and group B refuses a request for a set other than the one it signed
    with pytest.raises(ProtocolError, match="differs"):
        sim.clients["node-005"].on_unmask_request(UnmaskRequest(1, "gw-0", set_a, ("node-007",), sigs_a))
    # the honest server side sees too few signatures over its set and aborts
    survivors = sim.server.close_masked_collection()
    assert isinstance(survivors, Survivors)
    for node in sim.node_ids[:4]:
        assert not sim.server.on_consistency_signature(ConsistencySignature(1, node, sigs_a[node]))
    assert isinstance(sim.server.unmask_request(), Abort)


def test_client_refuses_both_share_kinds_of_one_peer_across_requests() -> None:
    sim, _ = _to_masked()
    everyone = tuple(sim.node_ids)
    signatures = _signed(sim, everyone, sim.node_ids)
    client = sim.clients["node-000"]
    first = client.on_unmask_request(UnmaskRequest(1, "gw-0", everyone, (), signatures))
    assert first is not None and "node-003" in first.b_shares and not first.s_shares
    # replaying the same request returns the same answer (nothing new released)
    assert client.on_unmask_request(UnmaskRequest(1, "gw-0", everyone, (), signatures)) == first
    survivors = tuple(n for n in everyone if n != "node-003")
    second = UnmaskRequest(1, "gw-0", survivors, ("node-003",), _signed_by_colluders(sim, survivors))
    with pytest.raises(ProtocolError, match="conflicting"):
        client.on_unmask_request(second)  # would hand out node-003's s-share after its b-share


def _signed_by_colluders(sim: Simulation, survivors: tuple[str, ...]) -> dict[str, bytes]:
    """Valid signatures over any set, as devices colluding with the server would produce."""
    statement = keys.consistency_statement(sim.fleet, 1, survivors, sim.model_hash)
    return {n: sim.identities[n].sign(statement) for n in survivors}


def test_client_ignores_stale_round_and_foreign_sender_and_replays_identically() -> None:
    sim, _ = _to_masked()
    client = sim.clients["node-001"]
    everyone = tuple(sim.node_ids)
    assert client.on_survivors(Survivors(0, "gw-0", everyone)) is None  # stale round: ignored
    assert client.on_survivors(Survivors(1, "gw-evil", everyone)) is None  # not our gateway
    assert client.stage is ClientStage.MASKED
    first = client.on_survivors(Survivors(1, "gw-0", everyone))
    assert client.on_survivors(Survivors(1, "gw-0", everyone)) == first  # replay: same answer
    with pytest.raises(ProtocolError, match="conflicting"):
        client.on_survivors(Survivors(1, "gw-0", everyone[1:]))


def test_client_refuses_survivor_sets_it_must_not_sign() -> None:
    sim, _ = _to_masked(n=8)
    ids = sim.node_ids
    cases = [
        (tuple(ids[1:]), "node-000", "omits this node"),
        (tuple(ids[:4]), "node-002", "fewer than t"),
        ((*ids, "node-999"), "node-001", "outside the roster"),
    ]
    for survivors, node, reason in cases:
        with pytest.raises(ProtocolError, match=reason):
            sim.clients[node].on_survivors(Survivors(1, "gw-0", tuple(sorted(survivors))))


def test_client_refuses_request_with_forged_or_too_few_signatures() -> None:
    sim, _ = _to_masked(n=8)
    everyone = tuple(sim.node_ids)
    signatures = _signed(sim, everyone, sim.node_ids)
    wrong_key = Ed25519PrivateKey.generate()
    statement = keys.consistency_statement(sim.fleet, 1, everyone, sim.model_hash)
    forged = {**signatures, "node-002": wrong_key.sign(statement)}
    with pytest.raises(ProtocolError, match="invalid consistency signature"):
        sim.clients["node-000"].on_unmask_request(UnmaskRequest(1, "gw-0", everyone, (), forged))
    few = dict(list(signatures.items())[:4])
    with pytest.raises(ProtocolError, match="fewer than t"):
        sim.clients["node-001"].on_unmask_request(UnmaskRequest(1, "gw-0", everyone, (), few))


def _routed(n: int = 5) -> tuple[Simulation, Roster, dict[str, RoutedShares]]:
    """Run advertise and shares for every node; return the roster and the shares routed to each node."""
    sim = Simulation(n=n, dimension=DIM, ring_bits=RING_BITS)
    for client in sim.clients.values():
        sim.server.on_advertise(client.advertise())
    roster = sim.server.close_advertise()
    assert isinstance(roster, Roster)
    for client in sim.clients.values():
        sim.server.on_share_keys(client.on_roster(roster))  # type: ignore[arg-type]
    routed = sim.server.close_share_keys()
    assert isinstance(routed, dict)
    return sim, roster, routed


def test_client_refuses_share_with_flipped_bit() -> None:
    sim, _roster, routed = _routed()
    honest = routed["node-000"]
    blob = bytearray(honest.ciphertexts["node-001"])
    blob[40] ^= 0x10
    tampered = RoutedShares(1, "gw-0", "node-000", {**honest.ciphertexts, "node-001": bytes(blob)})
    with pytest.raises(ProtocolError, match="failed to decrypt"):
        sim.clients["node-000"].on_routed_shares(tampered)


def test_client_refuses_a_share_re_addressed_from_another_node() -> None:
    """A share's key and associated data both bind it to (src, dst) (the AD alone:
    test_secagg_primitives.py). node-002 gets its own complete set except that the share from `src` is
    the one `src` encrypted for node-000: recipient, sources and count pass, only the binding refuses."""
    sim, _roster, routed = _routed()
    own, other = routed["node-002"], routed["node-000"]
    src = sorted((set(own.ciphertexts) & set(other.ciphertexts)) - {"node-000", "node-002"})[0]
    readdressed = RoutedShares(1, "gw-0", "node-002", {**own.ciphertexts, src: other.ciphertexts[src]})
    with pytest.raises(ProtocolError, match=f"share from {src} failed to decrypt"):
        sim.clients["node-002"].on_routed_shares(readdressed)


def test_client_refuses_fewer_shares_than_the_threshold_needs() -> None:
    """One genuine share is refused before any decryption: with this node's own share that makes 2 < t."""
    sim, roster, routed = _routed()
    assert roster.threshold > 2
    kept = next(iter(routed["node-003"].ciphertexts.items()))
    few = RoutedShares(1, "gw-0", "node-003", dict([kept]))
    with pytest.raises(ProtocolError, match="fewer than t share holders remain"):
        sim.clients["node-003"].on_routed_shares(few)


def test_client_refuses_roster_with_substituted_keys() -> None:
    sim = Simulation(n=4, dimension=DIM, ring_bits=RING_BITS)
    for client in sim.clients.values():
        sim.server.on_advertise(client.advertise())
    roster = sim.server.close_advertise()
    assert isinstance(roster, Roster)
    gateway_keys = keys.generate_key_pair()
    victim = roster.members[1]
    forged = dataclasses.replace(victim, s_public=gateway_keys.public_bytes)  # signature no longer matches
    bad = dataclasses.replace(roster, members=(roster.members[0], forged, *roster.members[2:]))
    with pytest.raises(ProtocolError, match="not validly signed"):
        sim.clients["node-000"].on_roster(bad)
    weak = dataclasses.replace(roster, threshold=2)  # t not a strict majority of k + 1 = 4
    with pytest.raises(ProtocolError, match="threshold"):
        sim.clients["node-002"].on_roster(weak)
