"""The device's round state machine driven by scripted, already-decoded messages (no broker, no trainer).

Three devices run real `SecAggClient`s inside `DeviceRound`; a real `SecAggServer` plays the gateway.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.agent.round import DeviceRound, Finished, Send, StartTraining, UploadDue, task_refusal
from edge_runtime.agent.state import Phase
from edge_runtime.agent.trusted_round import TrustedDeviceRound
from fl_protocol.codec.quantize import ring_sum
from fl_protocol.codec.settings import CodecSettings
from fl_protocol.errors import ProtocolError
from fl_protocol.secagg import Roster, SecAggClient, SecAggServer, Survivors
from fl_protocol.topics import Stage
from fl_protocol.wire.messages import PlainUpdate, RoundTask
from fl_protocol.wire.task_settings import DpSettings, SecAggSettings, TrainingSettings

FLEET, GW, ROUND, DIM = "f", "gw1", 7, 16
DEVICES = ("dev-a", "dev-b", "dev-c")
MODEL_HASH = bytes(32)


def make_task(
    round_id: int = ROUND, *, masked_ms: int = 10_000, unmask_ms: int = 20_000, mode: str = "secagg"
) -> RoundTask:
    """A small valid task (32-bit ring, no noise)."""
    codec = CodecSettings(
        clip_norm=1.0,
        keep_fraction=1.0,
        index_seed=bytes(32),
        rotate=False,
        rotation_seed=bytes(32),
        quant_bits=8,
        ring_bits=32,
        scale=100.0,
        error_feedback=True,
    )
    return RoundTask(
        round_id=round_id,
        model_version=0,
        model_sha256=MODEL_HASH,
        training=TrainingSettings(local_steps=2, batch_size=2, learning_rate=1e-3),
        codec=codec,
        dp=DpSettings(
            mechanism="none", noise_multiplier=0.0, clip_norm=1.0, min_survivors=2, target_delta=1e-5
        ),
        secagg=SecAggSettings(threshold_fraction=0.5, neighbour_degree=2, ring_bits=32, mode=mode),
        min_cohort=3,
        deadlines_ms={"masked": masked_ms, "unmask": unmask_ms},
        tier="public",
        model_dimension=DIM,
    )


@pytest.fixture
def cohort() -> tuple[SecAggServer, dict[str, DeviceRound]]:
    keys = {node: Ed25519PrivateKey.generate() for node in (GW, *DEVICES)}
    public = {node: key.public_key() for node, key in keys.items()}
    server = SecAggServer(
        GW,
        fleet=FLEET,
        round_id=ROUND,
        dimension=DIM,
        ring_bits=32,
        graph_seed=os.urandom(32),
        verify_key=public.get,
        model_hash=MODEL_HASH,
        min_cohort=3,
        degree=2,
        threshold=2,
    )
    rounds = {
        node: DeviceRound(
            make_task(),
            SecAggClient(
                node,
                gateway_id=GW,
                fleet=FLEET,
                round_id=ROUND,
                identity_key=keys[node],
                verify_key=public.get,
                model_hash=MODEL_HASH,
            ),
        )
        for node in DEVICES
    }
    return server, rounds


def _sent(actions: list[object], stage: Stage) -> object:
    (message,) = [a.message for a in actions if isinstance(a, Send) and a.stage is stage]
    return message


def _through_shares(server: SecAggServer, rounds: dict[str, DeviceRound]) -> None:
    for device in rounds.values():
        actions = device.start()
        assert any(isinstance(a, StartTraining) for a in actions)
        assert server.on_advertise(_sent(actions, Stage.ADVERTISE))  # type: ignore[arg-type]
    roster = server.close_advertise()
    assert isinstance(roster, Roster)
    for device in rounds.values():
        assert server.on_share_keys(_sent(device.on_roster(roster), Stage.SHARES))  # type: ignore[arg-type]
    routed = server.close_share_keys()
    assert isinstance(routed, dict)
    for node, device in rounds.items():
        assert device.on_routed_shares(routed[node]) == []  # training not done yet: no upload


def test_full_round_unmasks_the_sum_of_plain_updates(cohort) -> None:
    server, rounds = cohort
    _through_shares(server, rounds)
    rng = np.random.default_rng(1)
    plain = {}
    for node, device in rounds.items():
        assert device.on_training_done(ok=True) == [UploadDue()]
        plain[node] = rng.integers(0, 2**32, DIM, dtype=np.uint64).astype(np.uint32)
        (send,) = device.mask(plain[node])
        assert isinstance(send, Send) and send.stage is Stage.MASKED and send.durable
        assert server.on_masked_update(send.message)  # type: ignore[arg-type]
        assert device.phase is Phase.UPLOADED
    survivors = server.close_masked_collection()
    assert isinstance(survivors, Survivors)
    for device in rounds.values():
        assert server.on_consistency_signature(_sent(device.on_survivors(survivors), Stage.CONSISTENCY))  # type: ignore[arg-type]
    request = server.unmask_request()
    for device in rounds.values():
        actions = device.on_unmask_request(request)  # type: ignore[arg-type]
        assert actions[-1] == Finished(Phase.FINISHED, "")
        assert server.on_unmask_shares(_sent(actions, Stage.UNMASK))  # type: ignore[arg-type]
        assert device.done and device.on_unmask_request(request) == []  # type: ignore[arg-type]
    result = server.finalize()
    assert np.array_equal(result.values, ring_sum(np.stack(list(plain.values())), 32))  # type: ignore[union-attr]


def test_upload_waits_for_both_training_and_shares(cohort) -> None:
    server, rounds = cohort
    device = rounds["dev-a"]
    for other in rounds.values():
        server.on_advertise(_sent(other.start(), Stage.ADVERTISE))  # type: ignore[arg-type]
    assert device.on_training_done(ok=True) == []  # shares not in yet
    roster = server.close_advertise()
    for other in rounds.values():
        server.on_share_keys(_sent(other.on_roster(roster), Stage.SHARES))  # type: ignore[arg-type]
    routed = server.close_share_keys()
    assert device.on_routed_shares(routed["dev-a"]) == [UploadDue()]  # type: ignore[index]
    with pytest.raises(ProtocolError, match=r"mask\(\) is allowed once, after UploadDue"):
        rounds["dev-b"].mask(np.zeros(DIM, np.uint32))  # no UploadDue for dev-b yet


def test_routed_shares_that_overtake_the_roster_are_kept(cohort) -> None:
    server, rounds = cohort
    for other in rounds.values():
        server.on_advertise(_sent(other.start(), Stage.ADVERTISE))  # type: ignore[arg-type]
    roster = server.close_advertise()
    # dev-b and dev-c share first, so the gateway can route dev-a its shares before dev-a saw the roster
    late = rounds["dev-a"]
    early_answers = {n: rounds[n].on_roster(roster) for n in ("dev-b", "dev-c")}
    late_answer = late.on_roster(roster)
    for answers in (*early_answers.values(), late_answer):
        server.on_share_keys(_sent(answers, Stage.SHARES))  # type: ignore[arg-type]
    routed = server.close_share_keys()
    fresh = DeviceRound(make_task(), late.client)  # same client, roster not yet seen by this machine
    assert fresh.start()  # advertises again (the client returns the same keys): roster not yet answered
    assert fresh.on_routed_shares(routed["dev-a"]) == []  # type: ignore[index]
    fresh.on_training_done(ok=True)
    actions = fresh.on_roster(roster)  # replayed roster: cached shares, then the buffered routed shares
    assert isinstance(actions[0], Send) and actions[-1] == UploadDue()


def test_wrong_round_and_wrong_sender_are_ignored(cohort) -> None:
    server, rounds = cohort
    device = rounds["dev-a"]
    for other in rounds.values():
        server.on_advertise(_sent(other.start(), Stage.ADVERTISE))  # type: ignore[arg-type]
    roster = server.close_advertise()
    assert isinstance(roster, Roster)
    other_round = Roster(
        ROUND + 1,
        GW,
        roster.members,
        roster.graph_seed,
        roster.degree,
        roster.threshold,
        roster.dimension,
        roster.ring_bits,
    )
    assert device.on_roster(other_round) == [] and not device.done
    forged = Roster(
        ROUND,
        "dev-b",
        roster.members,
        roster.graph_seed,
        roster.degree,
        roster.threshold,
        roster.dimension,
        roster.ring_bits,
    )
    assert device.on_roster(forged) == [] and not device.done
    assert _sent(device.on_roster(roster), Stage.SHARES) is not None


def test_conflicting_roster_withdraws(cohort) -> None:
    server, rounds = cohort
    device = rounds["dev-a"]
    for other in rounds.values():
        server.on_advertise(_sent(other.start(), Stage.ADVERTISE))  # type: ignore[arg-type]
    roster = server.close_advertise()
    device.on_roster(roster)  # type: ignore[arg-type]
    changed = Roster(
        ROUND,
        GW,
        roster.members,
        os.urandom(32),
        roster.degree,
        roster.threshold,  # type: ignore[union-attr]
        roster.dimension,
        roster.ring_bits,
    )  # type: ignore[union-attr]
    (finished,) = device.on_roster(changed)
    assert isinstance(finished, Finished) and finished.phase is Phase.WITHDRAWN
    assert "secure aggregation refused" in finished.reason
    assert device.on_roster(roster) == []  # type: ignore[arg-type]


def test_deadlines_and_failures_end_the_round(cohort) -> None:
    _, rounds = cohort
    a, b, c = rounds.values()
    for device in (a, b, c):
        device.start()
    assert a.tick(9_999) == []
    (finished,) = a.tick(10_000)
    assert finished.phase is Phase.WITHDRAWN and "masked deadline" in finished.reason  # type: ignore[union-attr]
    assert a.tick(30_000) == [] and a.on_training_done(ok=True) == []
    (finished,) = b.on_training_done(ok=False, reason="loss is nan")
    assert "loss is nan" in finished.reason  # type: ignore[union-attr]
    (finished,) = c.on_abort("fewer than t survivors")
    assert "aborted" in finished.reason  # type: ignore[union-attr]


def test_task_refusal() -> None:
    task = make_task(5, masked_ms=1_000)
    assert task_refusal(task, now_ms=0, last_round=4) is None
    assert "not newer" in str(task_refusal(task, now_ms=0, last_round=5))
    assert "deadline passed" in str(task_refusal(task, now_ms=1_000, last_round=-1))


def test_trusted_round_trains_then_sends_one_plain_update_and_finishes() -> None:
    device = TrustedDeviceRound(make_task(mode="trusted"), "dev-a")
    assert device.start() == [StartTraining()] and device.start() == []
    with pytest.raises(ProtocolError, match="the plain update is sent once, after UploadDue"):
        device.mask(np.zeros(DIM, dtype=np.uint32))  # not before UploadDue
    assert device.on_training_done(ok=True) == [UploadDue()]
    values = np.arange(DIM, dtype=np.uint32)
    (send,) = device.mask(values)
    assert isinstance(send, Send) and send.stage is Stage.MASKED and send.durable
    assert send.message == PlainUpdate(ROUND, "dev-a", 32, values)
    with pytest.raises(ProtocolError, match="the plain update is sent once, after UploadDue"):
        device.mask(values)  # once only
    assert device.tick(10_000) == []  # the update is out: the masked deadline no longer matters
    (finished,) = device.uploaded()
    assert finished == Finished(Phase.FINISHED, "") and device.done
    assert device.on_abort("late abort") == [] and device.uploaded() == []


def test_trusted_round_gives_up_at_the_masked_deadline_and_refuses_secagg_tasks() -> None:
    device = TrustedDeviceRound(make_task(mode="trusted"), "dev-a")
    device.start()
    assert device.tick(9_999) == []
    (finished,) = device.tick(10_000)
    assert finished.phase is Phase.WITHDRAWN and "masked deadline" in finished.reason  # type: ignore[union-attr]
    assert device.on_training_done(ok=True) == []
    with pytest.raises(ProtocolError, match="TrustedDeviceRound needs a task in trusted mode"):
        TrustedDeviceRound(make_task(), "dev-a")
